// Package secure holds the trust and channel core of telegraf-ockam:
// identities and their purpose-key attestations, credentials issued by an
// authority, signed revocation lists, the per-message authorization check,
// and the Noise_XX channel with its framing and message types. Enrollment
// is in secure/enroll, the authority service's frames in authority/wire.
//
// Every encoding here is specified byte for byte in docs/PROTOCOL.md; the
// section names are given in each file. The package does no file or network
// I/O of its own beyond the io.ReadWriter a caller hands to a channel, and it
// never imports Telegraf.
package secure
