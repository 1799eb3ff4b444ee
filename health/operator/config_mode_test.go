package operator

import (
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/ringlb/ringlb/configs"
)

// A SIGHUP reads the config file by the rule a start reads it by: made
// writable by others since the start (an edit in it of anyone's), it is
// refused and nothing applies. Before, the reload applied whatever it held.
func TestReloadRefusesAConfigFileOthersMayWrite(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("file modes do not say who may write a file here")
	}
	_, path, orig, running := edgeConfigFile(t)
	var applied atomic.Int32
	cf := NewConfigFile(path, "edge", running, mustRead(t, path), func(_, next *configs.Config) error {
		applied.Add(1)
		return nil
	}, nil)
	edited := strings.Replace(orig, "messages: 100", "messages: 200", 1)
	if err := os.WriteFile(path, []byte(edited), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
	err := cf.Reload()
	t.Logf("reload of a file of mode 0666: %v", err)
	if err == nil || !strings.Contains(err.Error(), path+": writable by others (mode 0666)") || applied.Load() != 0 {
		t.Fatalf("reload of a config file others may write: %v (applied %d), want refused, nothing applied", err, applied.Load())
	}
	if got := cf.Running().Edge.History.Messages; got != 100 {
		t.Errorf("running config after the refused reload: history.messages %d, want 100", got)
	}
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	if err := cf.Reload(); err != nil || applied.Load() != 1 || cf.Running().Edge.History.Messages != 200 {
		t.Fatalf("reload of the file made 0640: %v (applied %d)", err, applied.Load())
	}
}
