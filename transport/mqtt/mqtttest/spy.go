package mqtttest

import (
	"bytes"
	"crypto/rand"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// Message is one message the spy saw.
type Message struct {
	Topic   string
	Payload []byte
}

// SpyClient is a client of the broker subscribed to "#" that records every
// message, for tests that check what the broker sees.
type SpyClient struct {
	mu   sync.Mutex
	msgs []Message
}

// Spy connects to the broker at brokerURL ("mqtt://host:port", as B.URL
// returns) and subscribes to "#" (every topic but $SYS/...) before it
// returns. It disconnects at cleanup.
func Spy(t testing.TB, brokerURL string) *SpyClient {
	t.Helper()
	s := &SpyClient{}
	co := paho.NewClientOptions().
		AddBroker("tcp://" + strings.TrimPrefix(brokerURL, "mqtt://")).
		SetClientID("mqtttest-spy-" + rand.Text()).
		SetCleanSession(true).
		SetAutoReconnect(false).
		SetOrderMatters(true)
	c := paho.NewClient(co)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("mqtttest: spy: connect to %s: %v", brokerURL, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	record := func(_ paho.Client, m paho.Message) {
		s.mu.Lock()
		s.msgs = append(s.msgs, Message{Topic: m.Topic(), Payload: bytes.Clone(m.Payload())})
		s.mu.Unlock()
	}
	if tok := c.Subscribe("#", 1, record); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("mqtttest: spy: subscribe: %v", tok.Error())
	}
	return s
}

// Messages returns a copy of the messages seen so far, in order of arrival.
func (s *SpyClient) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.msgs...)
}
