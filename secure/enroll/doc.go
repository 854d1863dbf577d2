// Package enroll is the enrollment protocol of telegraf-ockam
// (docs/PROTOCOL.md §14): enrollment tokens, the authority's signed bundle
// of prekeys, the device's X3DH-style request and the authority's answer,
// and their file forms. It is sans-IO: the authority's state and service
// are in package authority, the service's frames in authority/wire. It
// builds on package secure (identities, attestations, credentials) and
// imports nothing of Telegraf.
package enroll
