//go:build race

package ockamtest

func init() { raceFlags = []string{"-race"} }
