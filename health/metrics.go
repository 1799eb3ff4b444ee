package health

import "github.com/prometheus/client_golang/prometheus"

// The gossip's own metrics, on every role that gossips
// (Membership.Collector).
var (
	streamsRefusedDesc = prometheus.NewDesc("ringlb_gossip_streams_refused_total",
		"Inbound gossip streams closed at once (reason streams: too many open, from the address or in all), cut (reason bytes: their reads beyond the address's or the node's share of the read budget), or closed to make room for a newer stranger's stream (reason evicted: the oldest from an address no member has, when all strangers' slots are taken).",
		[]string{"reason"}, nil)
	joinsUnconfirmedDesc = prometheus.NewDesc("ringlb_gossip_joins_unconfirmed_total",
		"Members memberlist took in that this node never believed: taken for dead or gone before they answered one of its pings (a replayed capture of a node that has left, or a node whose UDP is blocked).",
		nil, nil)
	backDesc = prometheus.NewDesc("ringlb_gossip_back_total",
		"Times this node learnt that the others may have taken it for dead, by each way it knew (a time known two ways counts under both): it refuted a suspicion or death memberlist told it of (reason refuted), it did not run for longer than a probe and the others' shortest suspicion timeout (reason paused: stopped, starved of CPU), or no member answered its probes for that long (reason unanswered: cut off). It is away until a member answers it, then announces itself again; an edge asks where sessions live meanwhile and for a settle window after, as a new edge does.",
		[]string{"reason"}, nil)
	answersRefusedDesc = prometheus.NewDesc("ringlb_peer_answers_refused_total",
		"Answers to this node's signed reads of other nodes' admin APIs, and to the changes its dashboard forwards, refused: from a node announcing peer_signing 7 or more, without its valid X-Ringlb-Peer-Answer for the request they answer (altered or replayed on the way); each is read as no answer.",
		nil, nil)
)

// collector is Membership.Collector.
type collector struct{ m *Membership }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- streamsRefusedDesc
	ch <- joinsUnconfirmedDesc
	ch <- backDesc
	ch <- answersRefusedDesc
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	for i, reason := range refusalReasons {
		ch <- prometheus.MustNewConstMetric(streamsRefusedDesc, prometheus.CounterValue, float64(c.m.streams.refused[i].Load()), reason)
	}
	ch <- prometheus.MustNewConstMetric(joinsUnconfirmedDesc, prometheus.CounterValue, float64(c.m.joinsUnconfirmed.Load()))
	for i, reason := range backReasons {
		ch <- prometheus.MustNewConstMetric(backDesc, prometheus.CounterValue, float64(c.m.backs[i].Load()), reason)
	}
	var refused uint64
	if c.m.keyring != nil {
		refused = c.m.keyring.answers.refused.Load()
	}
	ch <- prometheus.MustNewConstMetric(answersRefusedDesc, prometheus.CounterValue, float64(refused))
}
