package lease

// Hooks into unexported state for the external tests of this package.

// SetScanPageSize makes s read Scan pages of at most n items.
func SetScanPageSize(s *DynamoStore, n int32) { s.scanLimit = n }

// TypeName names the DynamoDB type of an attribute value ("S", "N", ...).
var TypeName = typeName

// ResetMemoryTable empties s as if its table were deleted and created
// again: no lease, no fleet row.
func ResetMemoryTable(s *MemoryStore) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.leases = map[string]Lease{}
	s.fleet = Fleet{}
}
