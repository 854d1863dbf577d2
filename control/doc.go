// Package control is the signed control instruction of docs/PROTOCOL.md,
// section 17: an operator's instruction to a device (a Telegraf
// configuration fragment, a software artifact, a named command), signed
// with the operator's identity key and carrying the operator's credential,
// so that a gateway, relay or broker that carries it can drop it but not
// forge or alter it.
//
// Sign makes an instruction, Parse reads one strictly, and a Verifier
// decides on the device whether to apply it: the operator's credential
// (trusted authority, not expired, not revoked), the policy (which
// attributes may send which kinds), the target, the expiry, and the
// operator's sequence number against a persisted SequenceStore, so that an
// instruction is applied at most once and an older one never after a newer
// one. Every refusal is a *RefusalError with a RefusalCode, and OutcomeOf
// turns it (or success, or a failure) into the Outcome the device sends
// back. On the gateway, Pending keeps instructions until they expire and
// says which are due to a device when it connects.
//
// The package imports nothing of Telegraf; the appliers of the kinds are in
// control/apply.
package control
