package sender

// Counter is one internal metric; selfstat.Stat is one. Its methods are
// safe for concurrent use.
type Counter interface {
	Incr(n int64)
}

// Stats are the counters a Sender keeps. A nil Counter counts nothing.
type Stats struct {
	MessagesSent   Counter // data messages sent
	BytesSent      Counter // line-protocol bytes in them
	Acks           Counter // messages acknowledged
	NacksPermanent Counter // messages refused for good (their metrics dropped)
	NacksTransient Counter // messages the listener asked to retry
	Reconnects     Counter // channels opened after the first one
}

// StatFields are the names of the Stats counters, in the order of its
// fields: the fields of measurement internal_ockam that outputs.ockam
// reports, and the inlet's /health.
func StatFields() []string {
	return []string{"messages_sent", "bytes_sent", "acks", "nacks_permanent", "nacks_transient", "reconnects"}
}

// NewStats returns Stats whose counters register returns, one for each of
// StatFields.
func NewStats(register func(field string) Counter) Stats {
	var st Stats
	for i, c := range st.counters() {
		*c = register(StatFields()[i])
	}
	return st
}

// counters returns the Counters of st, in the order of StatFields.
func (st *Stats) counters() []*Counter {
	return []*Counter{&st.MessagesSent, &st.BytesSent, &st.Acks, &st.NacksPermanent, &st.NacksTransient, &st.Reconnects}
}

// orNop returns st with a no-op Counter for every nil one.
func (st Stats) orNop() Stats {
	for _, c := range st.counters() {
		if *c == nil {
			*c = nop{}
		}
	}
	return st
}

type nop struct{}

func (nop) Incr(int64) {}
