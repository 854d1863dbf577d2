package ockam_listener

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"time"

	"github.com/ockam-addons/telegraf-ockam/authority/wire"
	"github.com/ockam-addons/telegraf-ockam/secure"
)

const (
	// defaultRevocationPollInterval is how often revocation_source is asked
	// for the current list unless revocation_poll_interval says otherwise.
	defaultRevocationPollInterval = 30 * time.Second
	// revocationFetchTimeout bounds one fetch: connect, ask, read.
	revocationFetchTimeout = 30 * time.Second
)

// checkRevocationSource validates revocation_source and
// revocation_poll_interval.
func (l *Listener) checkRevocationSource() error {
	if l.RevocationPollInterval < 0 {
		return fmt.Errorf("revocation_poll_interval must not be negative, got %v", time.Duration(l.RevocationPollInterval))
	}
	if l.RevocationSource == "" {
		return nil
	}
	_, _, err := parseRevocationSource(l.RevocationSource)
	return err
}

// parseRevocationSource splits tcp://host:port.
func parseRevocationSource(s string) (network, address string, err error) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "tcp" && u.Scheme != "tcp4" && u.Scheme != "tcp6") || u.Opaque != "" ||
		u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return "", "", fmt.Errorf("revocation_source %q: want tcp://host:port", s)
	}
	if _, _, err := net.SplitHostPort(u.Host); err != nil {
		return "", "", fmt.Errorf("revocation_source %q: want tcp://host:port: %w", s, err)
	}
	return u.Scheme, u.Host, nil
}

// startRevocationSource starts polling revocation_source, if set.
func (l *Listener) startRevocationSource(ctx context.Context) {
	if l.RevocationSource == "" {
		return
	}
	l.running.Add(1)
	go l.pollRevocations(ctx)
}

// pollRevocations fetches the authority's current list at once, then every
// revocation_poll_interval, until ctx ends. A list is applied only if it
// is signed by a trusted authority and its sequence number is above the
// current one: a source that fails, lies or serves an older list changes
// nothing (the verifier keeps what it has), and its problem is logged once.
func (l *Listener) pollRevocations(ctx context.Context) {
	defer l.running.Done()
	network, address, _ := parseRevocationSource(l.RevocationSource) // checked in Init
	interval := time.Duration(l.RevocationPollInterval)
	if interval == 0 {
		interval = defaultRevocationPollInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	problem := ""
	var applied uint64
	for {
		list, err := fetchRevocationList(ctx, network, address)
		if err == nil && list != nil {
			if err = l.verifier.UpdateRevocations(list); err == nil && list.Sequence > applied {
				applied = list.Sequence
				l.Log.Infof("Revocation list from %q applied: sequence %d, %d subjects and %d credentials revoked",
					l.RevocationSource, list.Sequence, len(list.Subjects()), len(list.Credentials()))
			}
		}
		if ctx.Err() != nil {
			return
		}
		problem = l.reportSource(err, problem)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// reportSource logs a new problem with revocation_source once, and its end;
// it returns the problem of the moment.
func (l *Listener) reportSource(err error, last string) string {
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	switch {
	case msg == last:
	case msg == "":
		l.Log.Infof("revocation_source %q: OK again", l.RevocationSource)
	case errors.Is(err, secure.ErrStaleRevocationList):
		l.Log.Warnf("revocation_source %q serves an older list than the current one (refused): %v", l.RevocationSource, err)
	default:
		l.Log.Warnf("revocation_source %q: %v; keeping the current list", l.RevocationSource, err)
	}
	return msg
}

// fetchRevocationList asks the authority service at address for its list.
func fetchRevocationList(ctx context.Context, network, address string) (*secure.RevocationList, error) {
	ctx, cancel := context.WithTimeout(ctx, revocationFetchTimeout)
	defer cancel()
	var d net.Dialer
	nc, err := d.DialContext(ctx, network, address)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	defer stop()
	return wire.FetchRevocationList(nc)
}
