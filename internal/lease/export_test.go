package lease

// Hooks into unexported state for the external tests of this package.

// SetScanPageSize makes s read Scan pages of at most n items.
func SetScanPageSize(s *DynamoStore, n int32) { s.scanLimit = n }

// SetWorkerRowOwner overwrites the owner of worker id's presence row in s,
// the way a foreign writer could.
func SetWorkerRowOwner(s *MemoryStore, id, owner string) { s.setWorkerOwner(id, owner) }
