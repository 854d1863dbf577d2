package filewatch

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestCheckAppliesEachContentOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "list")
	// Each write gets an mtime of its own, a second after the last: the
	// file system stamps a write with a clock that may tick only every few
	// milliseconds (a coarse clock on kernels before 6.13), so two writes
	// of the same size in a row would otherwise often share size and mtime,
	// which Poll rightly takes for no change until FullReadInterval.
	mtime := time.Unix(1600000000, 0)
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		mtime = mtime.Add(time.Second)
		if err := os.Chtimes(path, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	var applied []string
	apply := func(b []byte) error {
		applied = append(applied, string(b))
		if string(b) == "bad" {
			return errors.New("refused")
		}
		return nil
	}
	w := New(path, 16)
	now := time.Unix(1700000000, 0)
	if err := w.Check(now, apply); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
	write("one")
	for range 3 {
		if err := w.Check(now, apply); err != nil {
			t.Fatal(err)
		}
	}
	write("bad")
	if err := w.Check(now, apply); err == nil || err.Error() != "refused" {
		t.Fatalf("bad content: %v", err)
	}
	if err := w.Check(now, apply); err == nil || err.Error() != "refused" {
		t.Fatalf("the verdict on the content last read stays: %v", err)
	}
	// Same size, same mtime, new content: caught by the full read.
	fi, _ := os.Stat(path)
	write("two")
	if err := os.Chtimes(path, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	if err := w.Check(now.Add(FullReadInterval), apply); err != nil {
		t.Fatal(err)
	}
	if want := []string{"one", "bad", "two"}; len(applied) != 3 || applied[0] != want[0] || applied[1] != want[1] || applied[2] != want[2] {
		t.Fatalf("applied %q, want %q", applied, want)
	}
	write("far too long for the limit")
	if err := w.Check(now.Add(2*FullReadInterval), apply); err == nil {
		t.Fatal("a file over the limit was read")
	}
}

func TestReportOncePerProblem(t *testing.T) {
	w := New("x", 1)
	bad := errors.New("bad")
	for i, tc := range []struct {
		err     error
		msg     string
		changed bool
	}{{nil, "", false}, {bad, "bad", true}, {bad, "bad", false}, {nil, "", true}, {nil, "", false}} {
		msg, changed := w.Report(tc.err)
		if msg != tc.msg || changed != tc.changed {
			t.Fatalf("step %d: Report = %q, %v; want %q, %v", i, msg, changed, tc.msg, tc.changed)
		}
	}
}
