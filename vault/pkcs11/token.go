//go:build cgo

package pkcs11

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	p11 "github.com/miekg/pkcs11"

	"github.com/ockam-addons/telegraf-ockam/vault"
)

// A module may be initialised once per process, and the login state of a
// token is shared by every session the process has on it (PKCS#11 2.40,
// C_Login: "all sessions of an application with a token"). So modules and
// logged-in sessions live in one process-wide registry, and each open Token
// is a counted reference to one: the last Close of a token logs out and
// closes its session, and the last of a module finalises it. A loaded module
// is never unloaded: unloading a library that started threads is not safe.
var registry = struct {
	sync.Mutex
	modules  map[string]*module      // by resolved path
	sessions map[sessionKey]*session // logged-in tokens
	pinKey   [32]byte                // keys the PIN MACs; random per process
}{modules: map[string]*module{}, sessions: map[sessionKey]*session{}}

func init() { rand.Read(registry.pinKey[:]) } // never fails (Go 1.24+)

// module is a loaded PKCS#11 library.
type module struct {
	path  string
	ctx   *p11.Ctx
	users int  // sessions open on it
	owned bool // we called C_Initialize, so we call C_Finalize
}

type sessionKey struct{ module, token string }

// session is the logged-in session on one token that every Token opened on
// it shares.
type session struct {
	mod    *module
	token  string // label
	slot   uint
	pinMAC [sha256.Size]byte // HMAC of the PIN it logged in with
	users  int               // open Tokens; guarded by registry

	mu     sync.Mutex // one PKCS#11 operation at a time on h
	h      p11.SessionHandle
	closed bool
}

// Token is a logged-in PKCS#11 token that holds Ed25519 keys under labels.
// It is safe for concurrent use; its operations run one at a time. Signers
// from a Token stop working when it is closed.
type Token struct {
	s      *session
	closed atomic.Bool
}

var errClosed = errors.New("pkcs11: token closed")

// OpenToken loads the PKCS#11 module (a shared library), finds the token
// labelled label, checks that it supports Ed25519 (CKM_EDDSA), and logs in
// as the user with pin. The PIN is used only here; it appears in no error.
//
// It returns an error wrapping ErrModule, ErrTokenNotFound, ErrNoEdDSA or
// ErrPIN for those failures. A process logs in to a token once: opening a
// token that is already open in this process checks that pin is the PIN it
// was opened with, and shares the session. Close each Token when done.
func OpenToken(modulePath, label string, pin []byte) (*Token, error) {
	if label == "" {
		return nil, fmt.Errorf("%w: empty token label", ErrTokenNotFound)
	}
	if len(pin) == 0 {
		return nil, fmt.Errorf("%w: empty PIN for token %q", ErrPIN, label)
	}
	path, err := resolveModule(modulePath)
	if err != nil {
		return nil, err
	}
	mac := pinMAC(pin)
	registry.Lock()
	defer registry.Unlock()
	key := sessionKey{path, label}
	if s, ok := registry.sessions[key]; ok {
		if subtle.ConstantTimeCompare(s.pinMAC[:], mac[:]) != 1 {
			return nil, fmt.Errorf("%w: token %q is already open in this process with another PIN", ErrPIN, label)
		}
		s.users++
		return &Token{s: s}, nil
	}
	m, err := loadModule(path)
	if err != nil {
		return nil, err
	}
	if err := m.acquire(); err != nil {
		return nil, err
	}
	s, err := m.login(label, pin)
	if err != nil {
		m.release()
		return nil, err
	}
	s.pinMAC, s.users = mac, 1
	registry.sessions[key] = s
	return &Token{s: s}, nil
}

// resolveModule returns the absolute path of the module file, with
// symbolic links resolved, so that one library has one registry entry.
func resolveModule(path string) (string, error) {
	if path == "" {
		return "", fmt.Errorf("%w: no module path", ErrModule)
	}
	resolved, err := filepath.EvalSymlinks(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("%w %s: no such file (is the token's PKCS#11 library installed? "+
			"SoftHSM's is /usr/lib/softhsm/libsofthsm2.so, from the softhsm2 package)", ErrModule, path)
	}
	if err != nil {
		return "", fmt.Errorf("%w %s: %v", ErrModule, path, err)
	}
	return filepath.Abs(resolved)
}

// loadModule returns the loaded module at path, loading it if needed. The
// caller holds registry.
func loadModule(path string) (*module, error) {
	if m, ok := registry.modules[path]; ok {
		return m, nil
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("%w %s: %v", ErrModule, path, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w %s: not a regular file", ErrModule, path)
	}
	ctx := p11.New(path) // dlopen and C_GetFunctionList
	if ctx == nil {
		return nil, fmt.Errorf("%w %s: it is not a PKCS#11 library (dlopen or C_GetFunctionList failed)", ErrModule, path)
	}
	m := &module{path: path, ctx: ctx}
	registry.modules[path] = m
	return m, nil
}

// acquire initialises the module for its first session. The caller holds
// registry.
func (m *module) acquire() error {
	if m.users == 0 {
		err := m.ctx.Initialize()
		switch {
		case err == nil:
			m.owned = true
		case isRV(err, p11.CKR_CRYPTOKI_ALREADY_INITIALIZED):
			m.owned = false // another part of the process did; it finalises
		default:
			return fmt.Errorf("%w %s: C_Initialize: %w", ErrModule, m.path, err)
		}
	}
	m.users++
	return nil
}

// release finalises the module after its last session. The caller holds
// registry.
func (m *module) release() {
	m.users--
	if m.users == 0 && m.owned {
		_ = m.ctx.Finalize() // nothing to do about a failure; the next acquire initialises again
		m.owned = false
	}
}

// login opens a read-write session on the token labelled label and logs in.
// The caller holds registry.
func (m *module) login(label string, pin []byte) (*session, error) {
	slot, err := m.findSlot(label)
	if err != nil {
		return nil, err
	}
	if err := m.checkEdDSA(slot, label); err != nil {
		return nil, err
	}
	h, err := m.ctx.OpenSession(slot, p11.CKF_SERIAL_SESSION|p11.CKF_RW_SESSION)
	if err != nil {
		return nil, fmt.Errorf("pkcs11: open a session on token %q: %w", label, err)
	}
	err = m.ctx.Login(h, p11.CKU_USER, string(pin))
	switch {
	case err == nil, isRV(err, p11.CKR_USER_ALREADY_LOGGED_IN):
		return &session{mod: m, token: label, slot: slot, h: h}, nil
	case isRV(err, p11.CKR_PIN_INCORRECT), isRV(err, p11.CKR_PIN_INVALID), isRV(err, p11.CKR_PIN_LEN_RANGE):
		err = fmt.Errorf("%w: wrong PIN for token %q (check pin-source)", ErrPIN, label)
	case isRV(err, p11.CKR_PIN_LOCKED):
		err = fmt.Errorf("%w: the user PIN of token %q is locked after too many wrong PINs; "+
			"the token's security officer must reset it", ErrPIN, label)
	case isRV(err, p11.CKR_USER_PIN_NOT_INITIALIZED):
		err = fmt.Errorf("%w: token %q has no user PIN yet; initialise it first", ErrPIN, label)
	default:
		err = fmt.Errorf("pkcs11: log in to token %q: %w", label, err)
	}
	_ = m.ctx.CloseSession(h)
	return nil, err
}

// findSlot returns the slot of the one initialised token labelled label.
func (m *module) findSlot(label string) (uint, error) {
	slots, err := m.ctx.GetSlotList(true)
	if err != nil {
		return 0, fmt.Errorf("pkcs11: list the slots of %s: %w", m.path, err)
	}
	var found []uint
	var others []string
	for _, slot := range slots {
		info, err := m.ctx.GetTokenInfo(slot)
		if err != nil || info.Flags&p11.CKF_TOKEN_INITIALIZED == 0 {
			continue
		}
		if info.Label == label {
			found = append(found, slot)
		} else {
			others = append(others, fmt.Sprintf("%q", info.Label))
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		have := "it has no initialised token"
		if len(others) > 0 {
			have = "its tokens are " + strings.Join(others, ", ")
		}
		return 0, fmt.Errorf("%w: %s has no token labelled %q; %s", ErrTokenNotFound, m.path, label, have)
	default:
		return 0, fmt.Errorf("pkcs11: %s has %d tokens labelled %q; give each a distinct label", m.path, len(found), label)
	}
}

// checkEdDSA returns ErrNoEdDSA unless the token in slot offers Ed25519 key
// generation and signing.
func (m *module) checkEdDSA(slot uint, label string) error {
	mechs, err := m.ctx.GetMechanismList(slot)
	if err != nil {
		return fmt.Errorf("pkcs11: list the mechanisms of token %q: %w", label, err)
	}
	var sign, generate bool
	for _, mech := range mechs {
		sign = sign || mech.Mechanism == ckmEdDSA
		generate = generate || mech.Mechanism == ckmECEdwardsKeyPairGen
	}
	if !sign || !generate {
		return fmt.Errorf("%w: token %q offers no CKM_EDDSA or no CKM_EC_EDWARDS_KEY_PAIR_GEN, so it cannot "+
			"hold an identity key; use a token that supports Ed25519 (PKCS#11 3.0), or a file vault", ErrNoEdDSA, label)
	}
	return nil
}

// pinMAC returns the HMAC of pin under the process's random key: enough to
// tell whether two Opens gave the same PIN, useless to anyone without the
// key.
func pinMAC(pin []byte) [sha256.Size]byte {
	h := hmac.New(sha256.New, registry.pinKey[:])
	h.Write(pin)
	var mac [sha256.Size]byte
	h.Sum(mac[:0])
	return mac
}

// isRV reports whether err is the PKCS#11 return value rv.
func isRV(err error, rv uint) bool {
	var e p11.Error
	return errors.As(err, &e) && uint(e) == rv
}

// Close releases the token: the last Close in the process logs out and
// closes the session. Signers from t fail afterwards. Close is idempotent.
func (t *Token) Close() error {
	if t.closed.Swap(true) {
		return nil
	}
	registry.Lock()
	defer registry.Unlock()
	s := t.s
	s.users--
	if s.users > 0 {
		return nil
	}
	delete(registry.sessions, sessionKey{s.mod.path, s.token})
	s.mu.Lock()
	s.closed = true
	_ = s.mod.ctx.Logout(s.h)
	err := s.mod.ctx.CloseSession(s.h)
	s.mu.Unlock()
	s.mod.release()
	if err != nil && !isRV(err, p11.CKR_CRYPTOKI_NOT_INITIALIZED) {
		return fmt.Errorf("pkcs11: close the session on token %q: %w", s.token, err)
	}
	return nil
}

// lock locks the session for one operation, unless t is closed.
func (t *Token) lock() (*session, error) {
	if t.closed.Load() {
		return nil, errClosed
	}
	t.s.mu.Lock()
	if t.s.closed {
		t.s.mu.Unlock()
		return nil, errClosed
	}
	return t.s, nil
}

// GenerateSigner generates an Ed25519 key pair in the token, labelled label:
// a private key that is sensitive, not extractable and only signs, and its
// public key. It returns an error wrapping vault.ErrExists if an object has
// that label, and ErrNoEdDSA if the token cannot generate the key.
func (t *Token) GenerateSigner(label string) (vault.Signer, error) {
	s, err := t.lock()
	if err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	taken, err := s.find(p11.NewAttribute(p11.CKA_LABEL, label))
	if err != nil {
		return nil, err
	}
	if len(taken) > 0 {
		return nil, fmt.Errorf("%w: token %q already holds an object labelled %q", vault.ErrExists, s.token, label)
	}
	pub, priv, err := s.generate(label, ecParamsOID)
	if isRV(err, p11.CKR_CURVE_NOT_SUPPORTED) || isRV(err, p11.CKR_DOMAIN_PARAMS_INVALID) ||
		isRV(err, p11.CKR_ATTRIBUTE_VALUE_INVALID) {
		pub, priv, err = s.generate(label, ecParamsString)
	}
	if isRV(err, p11.CKR_MECHANISM_INVALID) || isRV(err, p11.CKR_CURVE_NOT_SUPPORTED) {
		return nil, fmt.Errorf("%w: token %q: %w", ErrNoEdDSA, s.token, err)
	}
	if err != nil {
		return nil, fmt.Errorf("pkcs11: generate an Ed25519 key in token %q: %w", s.token, err)
	}
	sg, err := s.signer(t, label, priv, pub)
	if err == nil {
		err = sg.selfTest()
	}
	if err != nil {
		// Leave nothing behind that Signer would find and refuse.
		_ = s.mod.ctx.DestroyObject(s.h, priv)
		_ = s.mod.ctx.DestroyObject(s.h, pub)
		return nil, err
	}
	return sg, nil
}

// generate runs C_GenerateKeyPair for an edwards25519 key with the given
// CKA_EC_PARAMS.
func (s *session) generate(label string, ecParams []byte) (pub, priv p11.ObjectHandle, err error) {
	id := []byte(label)
	pubTemplate := []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_PUBLIC_KEY),
		p11.NewAttribute(p11.CKA_KEY_TYPE, ckkECEdwards),
		p11.NewAttribute(p11.CKA_TOKEN, true),
		p11.NewAttribute(p11.CKA_PRIVATE, false),
		p11.NewAttribute(p11.CKA_VERIFY, true),
		p11.NewAttribute(p11.CKA_EC_PARAMS, ecParams),
		p11.NewAttribute(p11.CKA_LABEL, label),
		p11.NewAttribute(p11.CKA_ID, id),
	}
	privTemplate := []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_PRIVATE_KEY),
		p11.NewAttribute(p11.CKA_KEY_TYPE, ckkECEdwards),
		p11.NewAttribute(p11.CKA_TOKEN, true),
		p11.NewAttribute(p11.CKA_PRIVATE, true),
		p11.NewAttribute(p11.CKA_SENSITIVE, true),
		p11.NewAttribute(p11.CKA_EXTRACTABLE, false),
		p11.NewAttribute(p11.CKA_SIGN, true),
		p11.NewAttribute(p11.CKA_DECRYPT, false),
		p11.NewAttribute(p11.CKA_UNWRAP, false),
		p11.NewAttribute(p11.CKA_DERIVE, false),
		p11.NewAttribute(p11.CKA_LABEL, label),
		p11.NewAttribute(p11.CKA_ID, id),
	}
	mech := []*p11.Mechanism{p11.NewMechanism(ckmECEdwardsKeyPairGen, nil)}
	return s.mod.ctx.GenerateKeyPair(s.h, mech, pubTemplate, privTemplate)
}

// Signer returns the Ed25519 key labelled label. It returns an error
// wrapping vault.ErrNotFound if the token has no private key so labelled,
// and refuses a key that is not Ed25519, or that is or ever was
// extractable or not sensitive: such a key may exist outside the token.
func (t *Token) Signer(label string) (vault.Signer, error) {
	s, err := t.lock()
	if err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	priv, err := s.findOne(p11.CKO_PRIVATE_KEY, label)
	if err != nil {
		return nil, err
	}
	pub, err := s.findOne(p11.CKO_PUBLIC_KEY, label)
	if errors.Is(err, vault.ErrNotFound) {
		return nil, fmt.Errorf("pkcs11: token %q holds the private key labelled %q but not its public key", s.token, label)
	}
	if err != nil {
		return nil, err
	}
	return s.signer(t, label, priv, pub)
}

// DeleteKey destroys the private and public key objects labelled label. It
// returns an error wrapping vault.ErrNotFound if there is none.
func (t *Token) DeleteKey(label string) error {
	s, err := t.lock()
	if err != nil {
		return err
	}
	defer s.mu.Unlock()
	var objects []p11.ObjectHandle
	for _, class := range []uint{p11.CKO_PRIVATE_KEY, p11.CKO_PUBLIC_KEY} {
		found, err := s.find(p11.NewAttribute(p11.CKA_CLASS, class), p11.NewAttribute(p11.CKA_LABEL, label))
		if err != nil {
			return err
		}
		objects = append(objects, found...)
	}
	if len(objects) == 0 {
		return fmt.Errorf("%w: no key labelled %q in token %q", vault.ErrNotFound, label, s.token)
	}
	for _, o := range objects {
		if err := s.mod.ctx.DestroyObject(s.h, o); err != nil {
			return fmt.Errorf("pkcs11: delete the key labelled %q in token %q: %w", label, s.token, err)
		}
	}
	return nil
}

// maxObjects bounds a search: a label names one key pair, so more matches
// than this is a token in a state we do not handle anyway.
const maxObjects = 16

// find returns the handles of the objects that match every attribute. The
// caller holds s.mu.
func (s *session) find(template ...*p11.Attribute) ([]p11.ObjectHandle, error) {
	if err := s.mod.ctx.FindObjectsInit(s.h, template); err != nil {
		return nil, fmt.Errorf("pkcs11: search token %q: %w", s.token, err)
	}
	found, _, err := s.mod.ctx.FindObjects(s.h, maxObjects)
	if ferr := s.mod.ctx.FindObjectsFinal(s.h); err == nil && ferr != nil {
		err = ferr
	}
	if err != nil {
		return nil, fmt.Errorf("pkcs11: search token %q: %w", s.token, err)
	}
	return found, nil
}

// findOne returns the one object of class labelled label (vault.ErrNotFound
// if there is none).
func (s *session) findOne(class uint, label string) (p11.ObjectHandle, error) {
	found, err := s.find(p11.NewAttribute(p11.CKA_CLASS, class), p11.NewAttribute(p11.CKA_LABEL, label))
	switch {
	case err != nil:
		return 0, err
	case len(found) == 0:
		return 0, fmt.Errorf("%w: no Ed25519 key labelled %q in token %q", vault.ErrNotFound, label, s.token)
	case len(found) > 1:
		return 0, fmt.Errorf("pkcs11: token %q holds %d keys labelled %q; delete all but one", s.token, len(found), label)
	}
	return found[0], nil
}

// bool attribute values as the token returns them (CK_BBOOL).
var (
	ckTrue  = []byte{1}
	ckFalse = []byte{0}
)

// signer checks the key pair priv, pub and returns its Signer. The caller
// holds s.mu.
func (s *session) signer(t *Token, label string, priv, pub p11.ObjectHandle) (*signer, error) {
	attrs, err := s.mod.ctx.GetAttributeValue(s.h, priv, []*p11.Attribute{
		p11.NewAttribute(p11.CKA_KEY_TYPE, nil),
		p11.NewAttribute(p11.CKA_SENSITIVE, nil),
		p11.NewAttribute(p11.CKA_ALWAYS_SENSITIVE, nil),
		p11.NewAttribute(p11.CKA_EXTRACTABLE, nil),
		p11.NewAttribute(p11.CKA_NEVER_EXTRACTABLE, nil),
	})
	if err != nil {
		return nil, fmt.Errorf("pkcs11: read the key labelled %q in token %q: %w", label, s.token, err)
	}
	if !equalULong(attrs[0].Value, ckkECEdwards) {
		return nil, fmt.Errorf("pkcs11: the key labelled %q in token %q is not an Ed25519 (CKK_EC_EDWARDS) key", label, s.token)
	}
	for i, want := range [][]byte{nil, ckTrue, ckTrue, ckFalse, ckTrue} {
		if want != nil && string(attrs[i].Value) != string(want) {
			return nil, fmt.Errorf("pkcs11: the key labelled %q in token %q is or was extractable or not sensitive, "+
				"so it may exist outside the token; use a key generated non-extractable (ockam identity create)",
				label, s.token)
		}
	}
	point, err := s.mod.ctx.GetAttributeValue(s.h, pub, []*p11.Attribute{p11.NewAttribute(p11.CKA_EC_POINT, nil)})
	if err != nil {
		return nil, fmt.Errorf("pkcs11: read the public key labelled %q in token %q: %w", label, s.token, err)
	}
	sg := &signer{token: t, label: label, priv: priv}
	if err := parseECPoint(&sg.pub, point[0].Value); err != nil {
		return nil, fmt.Errorf("pkcs11: the public key labelled %q in token %q: %w", label, s.token, err)
	}
	return sg, nil
}

// equalULong reports whether b is the CK_ULONG v in the platform's byte order.
func equalULong(b []byte, v uint) bool {
	want := p11.NewAttribute(0, v).Value
	return string(b) == string(want)
}

// String describes the token, for logs.
func (t *Token) String() string {
	return fmt.Sprintf("pkcs11.Token(%q in %s)", t.s.token, t.s.mod.path)
}

// Format prints String for every verb.
func (t *Token) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(t.String())) }

// LogValue makes slog print String.
func (t *Token) LogValue() slog.Value { return slog.StringValue(t.String()) }
