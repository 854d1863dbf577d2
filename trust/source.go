package trust

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"time"

	"github.com/ockam-addons/telegraf-ockam/authority/wire"
	"github.com/ockam-addons/telegraf-ockam/secure"
)

const (
	// DefaultPollInterval is how often the revocation source is asked for
	// the current list unless RevocationConfig.PollInterval says otherwise.
	DefaultPollInterval = 30 * time.Second
	// fetchTimeout bounds one fetch: connect, ask, read.
	fetchTimeout = 30 * time.Second
)

// ErrNoRevocationList is returned by Ready while a party configured with a
// revocation source holds no list at least as new as the one it persisted
// (fail-closed), or holds a stale one and StaleRefuses is set.
var ErrNoRevocationList = errors.New("no current revocation list")

// RevocationConfig is where revocation lists come from besides a file: an
// authority service polled for its current list, and what to do while
// there is none.
type RevocationConfig struct {
	// Source is the authority service, tcp://host:port; "" for none.
	Source string
	// PollInterval is how often Source is asked; DefaultPollInterval if 0.
	PollInterval time.Duration
	// State is the file where the newest list from Source is kept across
	// restarts, written 0600 by a temporary file and a rename;
	// DefaultStatePath(credential file) if "".
	State string
	// FailOpen lets Ready succeed before the first list arrived from
	// Source when no list was persisted (a first start) or the state file
	// is unusable: the party then trusts every credential until a list
	// arrives, which is logged as an error.
	FailOpen bool
	// StaleRefuses makes Ready fail while the newest list from Source is
	// past its next update; by default a stale list is logged and counted
	// and handshakes go on.
	StaleRefuses bool
	// Stale is called once for every list from Source that passed its
	// next update (the adapter counts revocation_list_stale); may be nil.
	Stale func()
}

// DefaultStatePath is where the revocation state of a party whose
// credential file is credential is kept unless configured: next to it,
// since whoever renews the credential can write there.
func DefaultStatePath(credential string) string { return credential + ".revocation-state" }

// check validates the options that need no file.
func (c RevocationConfig) check(n Names) error {
	if c.PollInterval < 0 {
		return fmt.Errorf("revocation_poll_interval must not be negative, got %v", c.PollInterval)
	}
	if c.Source == "" {
		return nil
	}
	_, _, err := parseSource(n.RevocationSource, c.Source)
	return err
}

// parseSource splits tcp://host:port.
func parseSource(option, s string) (network, address string, err error) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "tcp" && u.Scheme != "tcp4" && u.Scheme != "tcp6") || u.Opaque != "" ||
		u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return "", "", fmt.Errorf("%s %q: want tcp://host:port", option, s)
	}
	if _, _, err := net.SplitHostPort(u.Host); err != nil {
		return "", "", fmt.Errorf("%s %q: want tcp://host:port: %w", option, s, err)
	}
	return u.Scheme, u.Host, nil
}

// source polls an authority service for its revocation list and keeps the
// newest in the state file.
type source struct {
	t                *Trust
	cfg              RevocationConfig
	option           string // the name of the source option, for messages
	network, address string
	state            string // the state file

	readyCh chan struct{} // closed when ready becomes true

	mu       sync.Mutex
	current  *secure.RevocationList // the newest list from the source or the state file
	ready    bool                   // a list at least as new as the persisted one is applied
	stale    uint64                 // the sequence of the list last reported stale
	problem  string                 // the problem with the source last logged
	saveProb string                 // the problem with the state file last logged
}

// newSource loads the persisted state of cfg.Revocation; nil without a
// source.
func newSource(t *Trust) (*source, error) {
	cfg := t.cfg.Revocation
	if cfg.Source == "" {
		return nil, nil
	}
	network, address, _ := parseSource(t.names.RevocationSource, cfg.Source) // checked
	if cfg.PollInterval == 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	s := &source{t: t, cfg: cfg, option: t.names.RevocationSource, network: network, address: address,
		state: cfg.State, readyCh: make(chan struct{})}
	if s.state == "" {
		s.state = DefaultStatePath(t.cfg.Credential)
	}
	list, err := loadState(s.state)
	switch {
	case err != nil:
		return nil, fmt.Errorf("%s %q: %w (the newest revocation list from %s %q, kept across restarts; "+
			"if it is damaged, delete it: the next list from the source replaces it)",
			t.names.RevocationState, s.state, err, s.option, cfg.Source)
	case list != nil:
		if err := t.updateRevocations(list); err != nil {
			return nil, fmt.Errorf("%s %q: %w", t.names.RevocationState, s.state, err)
		}
		s.current = list
		s.setReady()
		t.log.Infof("Revocation list sequence %d from %s %q applied; %s %q is asked every %v",
			list.Sequence, t.names.RevocationState, s.state, s.option, cfg.Source, cfg.PollInterval)
	case cfg.FailOpen:
		s.setReady()
		t.log.Errorf("No revocation list was kept in %s %q and revocation_fail_open is set: every credential "+
			"is trusted until %s %q answers", t.names.RevocationState, s.state, s.option, cfg.Source)
	default:
		t.log.Warnf("No revocation list was kept in %s %q (a first start): no channel is accepted or opened "+
			"until %s %q answers", t.names.RevocationState, s.state, s.option, cfg.Source)
	}
	return s, nil
}

// Ready reports whether channels may be opened and accepted now: nil
// unless a revocation source is configured and the party holds no list at
// least as new as the one it persisted (fail-closed), or its list is stale
// and StaleRefuses is set. The error wraps ErrNoRevocationList.
func (t *Trust) Ready() error {
	s := t.source
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.ready {
		return fmt.Errorf("%w: waiting for the first list from %s %q (fail-closed)", ErrNoRevocationList, s.option, s.cfg.Source)
	}
	if s.cfg.StaleRefuses && s.current != nil && !t.now().Before(s.current.NextUpdate) {
		return fmt.Errorf("%w: the list from %s %q (sequence %d) is stale since %s", ErrNoRevocationList,
			s.option, s.cfg.Source, s.current.Sequence, s.current.NextUpdate.Format(time.RFC3339))
	}
	return nil
}

// setReady marks the source ready; s.mu is held or s is not shared yet.
func (s *source) setReady() {
	if !s.ready {
		s.ready = true
		close(s.readyCh)
	}
}

// WaitReady waits until Ready would not fail for want of a first list, or
// ctx ends, and then returns Ready's answer: a connection that arrives
// while the first list is being fetched waits for it rather than failing.
func (t *Trust) WaitReady(ctx context.Context) error {
	if s := t.source; s != nil {
		select {
		case <-s.readyCh:
		case <-ctx.Done():
		}
	}
	return t.Ready()
}

// poll fetches the authority's current list at once, then every poll
// interval, until ctx ends. A list is applied only if it is signed by a
// trusted authority and its sequence number is not below the current one:
// a source that fails, lies or serves an older list changes nothing, and
// its problem is logged once.
func (s *source) poll(ctx context.Context) {
	t := time.NewTicker(s.cfg.PollInterval)
	defer t.Stop()
	for {
		list, err := s.fetch(ctx)
		if ctx.Err() != nil {
			return
		}
		switch {
		case err == nil && list == nil:
			err = s.applyNone()
		case err == nil:
			err = s.apply(list)
		}
		s.report(err)
		s.checkStale(s.t.now())
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// apply makes list current if it is at least as new as the current one,
// and persists it.
func (s *source) apply(list *secure.RevocationList) error {
	if err := s.t.updateRevocations(list); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.current != nil && list.Sequence < s.current.Sequence {
		// A list from another issuer than the persisted one's, older.
		return nil
	}
	wasReady := s.ready
	s.setReady()
	if s.current != nil && s.current.Sequence == list.Sequence && s.current.Issuer == list.Issuer {
		if !wasReady {
			s.t.log.Infof("%s %q answered: channels are accepted", s.option, s.cfg.Source)
		}
		return nil
	}
	s.current = list
	s.t.log.Infof("Revocation list from %s %q applied: sequence %d, %d subjects and %d credentials revoked, next update %s",
		s.option, s.cfg.Source, list.Sequence, len(list.Subjects()), len(list.Credentials()),
		list.NextUpdate.Format(time.RFC3339))
	err := saveState(s.state, list)
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	if msg != s.saveProb {
		if msg != "" {
			s.t.log.Errorf("%s %q: %v; after a restart the older list in it applies until %s answers",
				s.t.names.RevocationState, s.state, err, s.option)
		} else {
			s.t.log.Infof("%s %q: OK again", s.t.names.RevocationState, s.state)
		}
		s.saveProb = msg
	}
	return nil
}

// applyNone takes in the source's answer that it has no list. That answer is
// not signed: anyone on the path can give it, so it opens nothing (an
// authority's service always serves a signed list, the first one empty:
// docs/PROTOCOL.md §14.7). A list persisted before stays.
func (s *source) applyNone() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.current != nil {
		return fmt.Errorf("it has no revocation list, but sequence %d was applied before: %w",
			s.current.Sequence, secure.ErrStaleRevocationList)
	}
	return fmt.Errorf("it answered that it has no list; that answer is not signed and opens nothing: %w",
		ErrNoRevocationList)
}

// report logs a new problem with the source once, and its end.
func (s *source) report(err error) {
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	s.mu.Lock()
	last := s.problem
	s.problem = msg
	ready := s.ready
	var seq uint64
	if s.current != nil {
		seq = s.current.Sequence
	}
	s.mu.Unlock()
	keeping := "no list is applied yet, no channel is accepted or opened"
	switch {
	case ready && seq == 0:
		keeping = "no list is applied yet (revocation_fail_open)"
	case seq > 0:
		keeping = fmt.Sprintf("keeping the current list (sequence %d)", seq)
	}
	switch {
	case msg == last:
	case msg == "":
		s.t.log.Infof("%s %q: OK again", s.option, s.cfg.Source)
	case errors.Is(err, secure.ErrStaleRevocationList):
		s.t.log.Warnf("%s %q serves an older list than the current one (refused, a replay?): %v; %s",
			s.option, s.cfg.Source, err, keeping)
	default:
		s.t.log.Warnf("%s %q: %v; %s", s.option, s.cfg.Source, err, keeping)
	}
}

// checkStale logs and counts a list from the source that passed its next
// update, once per list.
func (s *source) checkStale(now time.Time) {
	if s == nil {
		return
	}
	s.mu.Lock()
	cur := s.current
	report := cur != nil && !now.Before(cur.NextUpdate) && s.stale != cur.Sequence
	if report {
		s.stale = cur.Sequence
	}
	s.mu.Unlock()
	if !report {
		return
	}
	consequence := "channels go on (revocation_stale_refuses is off)"
	if s.cfg.StaleRefuses {
		consequence = "no channel is accepted or opened until a newer list arrives (revocation_stale_refuses)"
	}
	s.t.log.Errorf("The revocation list from %s %q (sequence %d) is stale: its next update was due at %s and no newer "+
		"list arrived; %s", s.option, s.cfg.Source, cur.Sequence, cur.NextUpdate.Format(time.RFC3339), consequence)
	if s.cfg.Stale != nil {
		s.cfg.Stale()
	}
}

// fetch asks the authority service for its list.
func (s *source) fetch(ctx context.Context) (*secure.RevocationList, error) {
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	var d net.Dialer
	nc, err := d.DialContext(ctx, s.network, s.address)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	defer stop()
	return wire.FetchRevocationList(nc)
}
