package sessions

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// sendBudget bounds the bytes every participant's send queue holds
// together (edge.max_queued_bytes), a frame counted once per queue it
// waits in. Each queue is bounded in frames (send_queue), but a client
// with many connections, each the participant that does not read in a
// session of its own beside one that sends the largest messages just short
// of filling its queue, made the edge hold the sum: 8 such sessions grew
// the heap by 65 MiB, and thousands of connections reach gigabytes.
//
// A frame for a participant whose queue is empty is always taken (it is
// written at once: a reader that keeps up never waits on the budget, and
// the overshoot is at most a frame per participant); a frame for one that
// still has frames waiting is refused once the budget is spent, and that
// participant is closed as a slow consumer (1013), giving its queue back.
type sendBudget struct {
	used  atomic.Int64
	limit atomic.Int64
}

// take charges n bytes to a queue that holds backlog bytes already;
// false: the budget is spent and the queue is not empty. A nil budget
// (a participant made without a Server, in benchmarks) counts nothing.
func (b *sendBudget) take(n, backlog int64) bool {
	if b == nil {
		return true
	}
	if backlog > 0 && b.used.Load()+n > b.limit.Load() {
		return false
	}
	b.used.Add(n)
	return true
}

// give returns n bytes a queue no longer holds.
func (b *sendBudget) give(n int64) {
	if b != nil {
		b.used.Add(-n)
	}
}

// queuedSize is what f counts against the budget while queued: the bytes
// it holds. A batch (a resume's replay) holds history frames, counted in
// the history's own budget.
func (f *frame) queuedSize() int64 {
	if f.batch != nil {
		return 0
	}
	return int64(len(f.buf))
}

// queuedBytesMetric reads what the send queues hold, against
// edge.max_queued_bytes.
func queuedBytesMetric(b *sendBudget) prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "ringlb_edge_queued_bytes",
		Help: "Bytes waiting in every connection's send queue on this edge, a frame counted once per queue, bounded by edge.max_queued_bytes (beyond it a connection with frames waiting is closed as a slow consumer).",
	}, func() float64 { return float64(b.used.Load()) })
}
