package bench

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
)

// hugeFrameTarget is a ringlb.v1 target that sends one frame of bytes
// bytes, after a welcome (or as its first frame, without one), written a
// chunk at a time: the target holds little, whatever it sends. It acks
// what it is sent.
type hugeFrameTarget struct {
	bytes   int
	welcome bool
}

func (h hugeFrameTarget) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	up := websocket.Upgrader{Subprotocols: []string{protocolV1}}
	c, err := up.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer c.Close()
	if h.welcome {
		c.WriteMessage(websocket.TextMessage, []byte(`{"type":"welcome","seq":0}`))
	}
	fw, err := c.NextWriter(websocket.TextMessage)
	if err != nil {
		return
	}
	fw.Write([]byte(`{"type":"msg","data":"`))
	chunk := []byte(strings.Repeat("a", 64<<10))
	for sent := 0; sent < h.bytes; sent += len(chunk) {
		if _, err := fw.Write(chunk); err != nil {
			return
		}
	}
	fw.Write([]byte(`"}`))
	if fw.Close() != nil {
		return
	}
	// Each msg acked, behind the huge frame: the run ends once it is read.
	for seq := 1; ; seq++ {
		if _, _, err := c.ReadMessage(); err != nil {
			return
		}
		c.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, `{"type":"ack","seq":%d}`, seq))
	}
}

// `ringlb bench ws -mode v1` holds no more of a target's frame than the
// load's envelopes take: a longer one is counted foreign and dropped as it
// is read, and a first frame longer than a welcome can be refuses the
// connection. Before, a frame was read whole into memory however long: a
// target (a peer compared, or anyone a run is pointed at) sending one of
// 64 MiB made the load allocate twice that.
func TestWSv1HoldsNoHugeFrame(t *testing.T) {
	const huge = 64 << 20
	run := func(target hugeFrameTarget) (*WSResult, error, uint64) {
		t.Helper()
		url := serveTarget(t, nil, target)
		since := allocatedSince()
		res, err := RunWS(t.Context(), WSOptions{
			Targets: []string{url}, Sessions: 1, Participants: 1,
			Rate: 2, Duration: time.Second, Drain: time.Minute, Mode: "v1",
		}, nil)
		return res, err, since()
	}

	res, err, allocated := run(hugeFrameTarget{bytes: huge, welcome: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("a %d MiB frame after the welcome: %d MB allocated; %s", huge>>20, allocated>>20, res.Summary())
	if res.Foreign != 1 {
		t.Errorf("%d foreign frames, want the huge one", res.Foreign)
	}
	if allocated > huge/4 {
		t.Errorf("%d MB allocated reading a %d MiB frame, want well under it", allocated>>20, huge>>20)
	}

	res, err, allocated = run(hugeFrameTarget{bytes: huge})
	t.Logf("a %d MiB first frame: %d MB allocated; %v; %+v", huge>>20, allocated>>20, err, res)
	if err == nil && res.ConnsOK != 0 {
		t.Errorf("connected to a target whose first frame is no welcome")
	}
	if allocated > huge/4 {
		t.Errorf("%d MB allocated reading a %d MiB first frame, want well under it", allocated>>20, huge>>20)
	}
}
