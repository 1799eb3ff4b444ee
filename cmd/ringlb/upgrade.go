package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/ringlb/ringlb/balancer/handoff"
	"github.com/ringlb/ringlb/configs"
)

// upgradeNode replaces this process with the binary at its path (SIGUSR2):
// the new process inherits the listeners and, once ready, takes over what
// the node holds (a balancer's tunnels); this one then exits. It reports
// whether it handed over (the caller exits); on a failure it logs why and
// the node goes on serving.
func upgradeNode(ctx context.Context, n *node, proc *handoff.Process, dir string, stopTimeout time.Duration, logger *slog.Logger) bool {
	began := time.Now()
	logger.Info("upgrade: starting the new process", "node", n.name, "binary", proc.Executable())
	child, err := proc.Upgrade(ctx, n.sendState)
	if err != nil {
		attrs := []any{"node", n.name, "err", err}
		var ue *handoff.UpgradeError
		if errors.As(err, &ue) && ue.StderrTail != "" {
			attrs = append(attrs, "child_stderr", ue.StderrTail)
		}
		logger.Error("upgrade failed; this process keeps serving", attrs...)
		if werr := handoff.WriteStatus(dir, "failed: "+err.Error()); werr != nil {
			logger.Warn("upgrade: could not record the outcome for ringlb upgrade", "err", werr)
		}
		return false
	}
	logger.Info("upgrade: the new process is ready; handing over", "node", n.name, "pid", child.PID)
	handCtx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	if err := n.handOff(handCtx, child.Conn); err != nil {
		logger.Error("upgrade: hand-off incomplete", "node", n.name, "err", err)
	}
	cancel()
	if err := child.Conn.End(); err != nil {
		logger.Error("upgrade: the new process stopped listening", "node", n.name, "err", err)
	}
	taken, err := child.Conn.WaitDone(takeOverGossipWait)
	if err != nil {
		logger.Warn("upgrade: no word from the new process after the hand-off", "node", n.name, "err", err)
	}
	child.Conn.Close()
	// systemd follows the new process as the service's main process.
	if _, err := daemon.SdNotify(false, fmt.Sprintf("MAINPID=%d", child.PID)); err != nil {
		logger.Warn("upgrade: systemd notification failed", "err", err)
	}
	if err := handoff.WriteStatus(dir, fmt.Sprintf("ok %d", child.PID)); err != nil {
		logger.Warn("upgrade: could not record the outcome for ringlb upgrade", "err", err)
	}
	// What could not move (TLS tunnels) runs until the shutdown timeout.
	stopCtx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	if err := n.stop(stopCtx); err != nil {
		logger.Warn("upgrade: stopping the old process", "node", n.name, "err", err)
	}
	logger.Info("upgrade done; the old process exits", "node", n.name, "new_pid", child.PID, "tunnels_taken", taken,
		"took", time.Since(began).Round(time.Millisecond))
	return true
}

// notifySystemd tells systemd (Type=notify) that the node serves; a process
// started by an upgrade also names itself the main process.
func notifySystemd(logger *slog.Logger, upgraded bool) {
	state := daemon.SdNotifyReady
	if upgraded {
		state = fmt.Sprintf("MAINPID=%d\n%s", os.Getpid(), daemon.SdNotifyReady)
	}
	if _, err := daemon.SdNotify(false, state); err != nil {
		logger.Warn("systemd notification failed", "err", err)
	}
}

// runUpgrade is `ringlb upgrade -pid PID`: SIGUSR2 to a running balancer
// or gslb, then wait until it has handed over and exited, or says why not.
func runUpgrade(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flagSet("upgrade", "Replaces a running balancer or gslb (PID) with the binary at the path it was started from,\nwithout closing a connection: the new process inherits the listeners and every tunnel, the old one\nexits. Exit 0 once the old process has exited; 1 when the upgrade failed (the old process keeps serving)\nor did not end within -timeout. Used by the systemd unit's ExecReload.", stderr)
	pid := fs.Int("pid", 0, "process to upgrade (required; under systemd: $MAINPID)")
	dir := fs.String("upgrade-dir", "", "the process's -upgrade-dir, where it records the outcome (default as the process's)")
	timeout := fs.Duration("timeout", 2*time.Minute, "how long to wait for the old process to exit")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *pid <= 0 {
		fs.Usage()
		return errors.New("-pid is required")
	}
	uid, err := processUser(*pid)
	if err != nil {
		return err
	}
	// The outcome is read from the process's private directory (it makes
	// it at its first upgrade): one another user made, or can enter,
	// would let them answer for it.
	d := *dir
	if d == "" {
		d = handoff.DefaultDir()
	}
	checkDir := func() error {
		if err := handoff.CheckDir(d, uid); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return nil
	}
	if err := checkDir(); err != nil {
		return err
	}
	status := handoff.StatusPath(d, *pid)
	_ = os.Remove(status) // a previous attempt's
	if err := syscall.Kill(*pid, syscall.SIGUSR2); err != nil {
		return fmt.Errorf("signal pid %d: %w", *pid, err)
	}
	deadline := time.After(*timeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline:
			return fmt.Errorf("pid %d still running after %s: the upgrade is still under way or failed (see its log)", *pid, *timeout)
		case <-tick.C:
		}
		if err := checkDir(); err != nil {
			return err
		}
		data, _ := os.ReadFile(status)
		line := strings.TrimSpace(string(data))
		if reason, failed := strings.CutPrefix(line, "failed: "); failed {
			os.Remove(status)
			return fmt.Errorf("upgrade of pid %d failed, it keeps serving: %s", *pid, reason)
		}
		if exited(*pid) {
			next, _ := strings.CutPrefix(line, "ok ")
			os.Remove(status)
			if _, err := strconv.Atoi(next); err != nil {
				return fmt.Errorf("pid %d exited without recording an upgrade (stopped or crashed?)", *pid)
			}
			fmt.Fprintf(stdout, "upgraded: pid %d handed over to pid %s and exited\n", *pid, next)
			return nil
		}
	}
}

// exited reports whether pid has exited: gone, or a zombie its new parent
// has not reaped yet (it serves nothing any more).
func exited(pid int) bool {
	if data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		// "pid (comm) S ...": the state follows the last ')'.
		s := string(data)
		if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
			return s[i+2] == 'Z'
		}
	}
	return syscall.Kill(pid, 0) == syscall.ESRCH
}

// processUser is the user pid runs as: the owner of its /proc entry.
func processUser(pid int) (int, error) {
	fi, err := os.Stat(fmt.Sprintf("/proc/%d", pid))
	if err != nil {
		return 0, fmt.Errorf("pid %d: %w", pid, err)
	}
	uid, _, ok := configs.FileOwner(fi)
	if !ok {
		return 0, fmt.Errorf("pid %d: no owner", pid)
	}
	return int(uid), nil
}
