package sender

// Counter is one internal metric; selfstat.Stat is one. Its methods are
// safe for concurrent use.
type Counter interface {
	Incr(n int64)
}

// Stats are the counters a Sender keeps. A nil Counter counts nothing.
// outputs.ockam registers them as the fields of internal_ockam named in
// each comment.
type Stats struct {
	MessagesSent   Counter // messages_sent: data messages sent
	BytesSent      Counter // bytes_sent: line-protocol bytes in them
	Acks           Counter // acks
	NacksPermanent Counter // nacks_permanent: messages refused for good (their metrics dropped)
	NacksTransient Counter // nacks_transient: messages the listener asked to retry
	Reconnects     Counter // reconnects: channels opened after the first one
}

// orNop returns st with a no-op Counter for every nil one.
func (st Stats) orNop() Stats {
	for _, c := range []*Counter{&st.MessagesSent, &st.BytesSent, &st.Acks, &st.NacksPermanent, &st.NacksTransient,
		&st.Reconnects} {
		if *c == nil {
			*c = nop{}
		}
	}
	return st
}

type nop struct{}

func (nop) Incr(int64) {}
