package sessions

import (
	"fmt"
	"testing"

	"github.com/ringlb/ringlb/configs"
)

// BenchmarkReplicatedMsg is one ringlb.v1 msg's round trip on a real edge
// of a two-edge cluster — msg sent, ack read — with replication off, async
// and sync: what sync adds is the replica's round trip (a batch written,
// applied and acknowledged) before the ack goes out. Clients are in-process
// WebSocket clients, so allocations include theirs.
func BenchmarkReplicatedMsg(b *testing.B) {
	for _, mode := range []string{configs.ReplicationOff, configs.ReplicationAsync, configs.ReplicationSync} {
		b.Run("replication="+mode, func(b *testing.B) {
			a, _, key := replPair(b, mode, "bench-"+mode)
			p := a.joinV1(b, key, "", nil)
			msg := []byte(`{"type":"msg","data":"an edit: insert 'x' at line 42, column 7 (64 bytes of payload)"}`)
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				if err := p.WriteMessage(1, msg); err != nil {
					b.Fatal(err)
				}
				if ack := p.readType(b, "ack"); ack.Seq != uint64(i+1) {
					b.Fatal(fmt.Sprintf("ack %+v", ack))
				}
			}
		})
	}
}
