package lease

import (
	"maps"
	"slices"

	"github.com/shardline/shardline/internal/ddbcost"
)

// scanPageBytes is the most a Scan page reads.
const scanPageBytes = 1 << 20

// SetMeter makes the store charge every operation to m as DynamoDB would
// bill the requests a [DynamoStore] sends for it, computed with the
// package ddbcost from the sizes of the items DynamoStore would store. A
// nil m stops the charging.
func (s *MemoryStore) SetMeter(m *ddbcost.Meter) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.meter = m
	s.sizes = nil
	if m == nil {
		return
	}
	s.sizes = map[string]int{}
	for k, l := range s.leases {
		s.sizes[k] = ItemSize(l)
	}
	if s.fleet.Members != nil {
		s.sizes[fleetRowKey] = s.fleetSize()
	}
}

// ItemSize returns the DynamoDB size of l's item as a DynamoStore stores it.
func ItemSize(l Lease) int { return ddbcost.ItemSize(encodeLease(l)) }

// fleetSize is the size of the fleet row as DynamoStore stores it.
func (s *MemoryStore) fleetSize() int { return ddbcost.ItemSize(encodeFleet(s.fleet)) }

// chargeScan bills a Scan of the whole table (a filter does not reduce the
// bill), page by page. s.mu is held.
func (s *MemoryStore) chargeScan(op string, consistent bool) {
	if s.meter == nil {
		return
	}
	units, page := 0.0, 0
	for _, k := range slices.Sorted(maps.Keys(s.sizes)) {
		if page+s.sizes[k] > scanPageBytes {
			units += ddbcost.ReadUnits(page, consistent)
			page = 0
		}
		page += s.sizes[k]
	}
	s.meter.Read(op, units+ddbcost.ReadUnits(page, consistent))
}

// chargeGet bills a GetItem of key. s.mu is held.
func (s *MemoryStore) chargeGet(op, key string, consistent bool) {
	if s.meter != nil {
		s.meter.Read(op, ddbcost.ReadUnits(s.sizes[key], consistent))
	}
}

// chargeWrite bills a write of key whose item now has size n (0: deleted),
// or a refused one (n < 0), and records the new size. s.mu is held.
func (s *MemoryStore) chargeWrite(op, key string, n int) {
	if s.meter == nil {
		return
	}
	old := s.sizes[key]
	if n < 0 {
		s.meter.Write(op+"(refused)", ddbcost.WriteUnits(old))
		return
	}
	s.meter.Write(op, ddbcost.WriteUnits(max(old, n)))
	if n == 0 {
		delete(s.sizes, key)
	} else {
		s.sizes[key] = n
	}
}

// leaseSize returns the item size of l while metered (0 otherwise, unused).
// s.mu is held.
func (s *MemoryStore) leaseSize(l Lease) int {
	if s.meter == nil {
		return 0
	}
	return ItemSize(l)
}
