// Package ddbcost counts the capacity units DynamoDB charges for requests,
// from the sizes of the items they read and write, the way DynamoDB
// computes them: reads per 4 KB (Scan and Query pages by the bytes of every
// item read before any filter, GetItem per item), halved when eventually
// consistent; writes per 1 KB of the larger of the item before and after;
// a write to every global secondary index whose projection changes.
//
// [Client] wraps a DynamoDB client and charges each call; [Meter] adds up
// charges and turns them into on-demand prices. The in-memory lease store
// charges its operations through the same functions (see ItemSize,
// ReadUnits and WriteUnits), so a simulation over it and a fleet on a real
// table are billed alike.
package ddbcost

import (
	"strings"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// Sizes of DynamoDB's capacity units.
const (
	// ReadUnitBytes is the item size one strongly consistent read unit covers.
	ReadUnitBytes = 4096
	// WriteUnitBytes is the item size one write unit covers.
	WriteUnitBytes = 1024
)

// ItemSize returns the size DynamoDB counts for an item: for each attribute
// its name's UTF-8 length plus its value's size (see ValueSize).
func ItemSize(item map[string]types.AttributeValue) int {
	n := 0
	for name, v := range item {
		n += len(name) + ValueSize(v)
	}
	return n
}

// ValueSize returns the size DynamoDB counts for one attribute value, its
// name excluded: a string's UTF-8 bytes, a binary's bytes, a number's
// significant digits two per byte plus one byte, one byte for a boolean or
// null, the sum of the elements of a set, and for a list or a map 3 bytes
// plus one byte per element plus the elements (with their keys, for a map).
func ValueSize(v types.AttributeValue) int {
	switch v := v.(type) {
	case *types.AttributeValueMemberS:
		return len(v.Value)
	case *types.AttributeValueMemberN:
		return NumberSize(v.Value)
	case *types.AttributeValueMemberB:
		return len(v.Value)
	case *types.AttributeValueMemberBOOL, *types.AttributeValueMemberNULL:
		return 1
	case *types.AttributeValueMemberSS:
		n := 0
		for _, s := range v.Value {
			n += len(s)
		}
		return n
	case *types.AttributeValueMemberNS:
		n := 0
		for _, s := range v.Value {
			n += NumberSize(s)
		}
		return n
	case *types.AttributeValueMemberBS:
		n := 0
		for _, b := range v.Value {
			n += len(b)
		}
		return n
	case *types.AttributeValueMemberL:
		n := 3
		for _, e := range v.Value {
			n += 1 + ValueSize(e)
		}
		return n
	case *types.AttributeValueMemberM:
		n := 3
		for k, e := range v.Value {
			n += 1 + len(k) + ValueSize(e)
		}
		return n
	}
	return 0
}

// NumberSize returns the size of a number given in DynamoDB's text form:
// one byte per two significant digits (leading and trailing zeros and the
// sign and decimal point left out), plus one byte.
func NumberSize(s string) int {
	s = strings.TrimLeft(s, "+-")
	if i := strings.IndexAny(s, "eE"); i >= 0 {
		s = s[:i]
	}
	digits := strings.ReplaceAll(s, ".", "")
	digits = strings.Trim(digits, "0")
	d := utf8.RuneCountInString(digits)
	if d == 0 {
		d = 1
	}
	return (d+1)/2 + 1
}

// ReadUnits returns the read units of reading bytes in one page (a Scan or
// Query page, or one GetItem): whole 4 KB units, at least one, halved when
// eventually consistent.
func ReadUnits(bytes int, consistent bool) float64 {
	u := float64(max(1, (bytes+ReadUnitBytes-1)/ReadUnitBytes))
	if !consistent {
		u /= 2
	}
	return u
}

// WriteUnits returns the write units of writing an item of the given size
// (for an update, the larger of its sizes before and after): whole 1 KB
// units, at least one.
func WriteUnits(bytes int) float64 {
	return float64(max(1, (bytes+WriteUnitBytes-1)/WriteUnitBytes))
}
