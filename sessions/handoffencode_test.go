package sessions

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"
)

// encodedBatch is a drain's batch of n sessions of msgs history envelopes
// each, as handoffState builds them, with the cases json.Marshal writes
// apart: a lost seq's null envelope, no history, an empty one, term 0.
func encodedBatch(n, msgs int) *handoffRequest {
	req := &handoffRequest{From: `edge-"1"\` + "\u2028"}
	for i := range n {
		hs := handoffSession{Key: fmt.Sprintf("key-%d <&> \x01 é", i), Epoch: "abcdefghijklmnop", Seq: uint64(msgs + i), Term: uint64(i % 3)}
		switch i % 4 {
		case 1:
			hs.History = nil
		case 2:
			hs.History = []json.RawMessage{}
		default:
			for j := range msgs {
				env := json.RawMessage(fmt.Sprintf(`{"type":"msg","seq":%d,"from":"p%d","data":{"c":"chaos-%d.1","n":%d}}`, j+1, i, i, j))
				if j == 2 {
					env = nil // a seq lost with a crashed owner
				}
				hs.History = append(hs.History, env)
			}
		}
		req.Sessions = append(req.Sessions, hs)
	}
	return req
}

// A drain's hand-off body is what json.Marshal writes, byte for byte: a
// new owner of any release reads it as before.
func TestHandoffEncodingIsJSONMarshals(t *testing.T) {
	for _, req := range []*handoffRequest{encodedBatch(9, 5), {From: "edge-a"}, {From: "edge-a", Sessions: []handoffSession{}}} {
		want, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		if got := req.appendJSON(nil); !bytes.Equal(got, want) {
			t.Errorf("hand-off body\n%s\nwant json.Marshal's\n%s", got, want)
		}
	}
}

// BenchmarkHandoffEncode: a 2 MiB batch (26 sessions of 1,000 msgs), as a
// drain encodes each of its requests.
func BenchmarkHandoffEncode(b *testing.B) {
	req := encodedBatch(26, 1000)
	for _, enc := range []struct {
		name string
		f    func() []byte
	}{
		{"appendJSON", func() []byte { return req.appendJSON(nil) }},
		{"json.Marshal", func() []byte { body, _ := json.Marshal(req); return body }},
	} {
		b.Run(enc.name, func(b *testing.B) {
			b.SetBytes(int64(len(enc.f())))
			for b.Loop() {
				enc.f()
			}
		})
	}
}
