package lease

// Hooks into unexported state for the external tests of this package.

// SetScanPageSize makes s read Scan pages of at most n items.
func SetScanPageSize(s *DynamoStore, n int32) { s.scanLimit = n }

// TypeName names the DynamoDB type of an attribute value ("S", "N", ...).
var TypeName = typeName
