package operator

import (
	"testing"

	"github.com/ringlb/ringlb/balancer/acceptguard/fdtest"
)

// A save that fails (out of descriptors, here) is written as the store
// closes, if its retry has not written it yet: the next start reads the
// state the node stopped with, not the one before the failed save — a
// login session ended meanwhile valid again, a drain gone.
func TestFailedSaveWrittenAtClose(t *testing.T) {
	if !fdtest.Alone(t) {
		return
	}
	store, err := OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	type state struct{ Sessions []string }
	if err := store.Save("sessions", state{[]string{"a", "b"}}); err != nil {
		t.Fatal(err)
	}
	release := fdtest.ExhaustDescriptors(t)
	err = store.Save("sessions", state{[]string{"a"}}) // b logged out
	release()
	if err == nil {
		t.Fatal("a save with no descriptor left succeeded")
	}
	store.Close()
	var got state
	if err := store.Load("sessions", &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Sessions) != 1 {
		t.Errorf("after the store closed its file holds %v, want [a]: the failed save is lost", got.Sessions)
	}
}
