package main

import (
	"bytes"
	"context"
	"testing"
)

func TestCodecRoundTripAndTampering(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 32)
	c, err := newCodec(key)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	enc, err := c.EncodeRecord(ctx, "pk", []byte("secret"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(enc, []byte("secret")) {
		t.Fatal("plaintext visible in the encoded record")
	}
	again, _ := c.EncodeRecord(ctx, "pk", []byte("secret"))
	if bytes.Equal(enc, again) {
		t.Fatal("two encryptions are identical: nonce reused")
	}
	dec, err := c.DecodeRecord(ctx, "pk", enc)
	if err != nil || string(dec) != "secret" {
		t.Fatalf("DecodeRecord = %q, %v", dec, err)
	}
	if _, err := c.DecodeRecord(ctx, "other-pk", enc); err == nil {
		t.Error("a record moved to another partition key decrypted")
	}
	tampered := bytes.Clone(enc)
	tampered[len(tampered)-1] ^= 1
	if _, err := c.DecodeRecord(ctx, "pk", tampered); err == nil {
		t.Error("a tampered record decrypted")
	}
	other, _ := newCodec(bytes.Repeat([]byte{8}, 32))
	if _, err := other.DecodeRecord(ctx, "pk", enc); err == nil {
		t.Error("decrypted with the wrong key")
	}
	if _, err := c.DecodeRecord(ctx, "pk", []byte("short")); err == nil {
		t.Error("a short record decrypted")
	}
	if _, err := newCodec([]byte("short key")); err == nil {
		t.Error("a 9-byte key accepted")
	}
}
