package main

import (
	"context"
	"debug/buildinfo"
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
	"github.com/ringlb/ringlb/health/operator"
)

// upgradeNode replaces this process with the binary at its path (SIGUSR2):
// the new process inherits the listeners and, once ready, takes over what
// the node holds (a balancer's tunnels); this one then exits. It reports
// whether it handed over (the caller exits, with err when the new process
// then failed to take over: nothing serves); on a failure before the
// hand-off it logs why and the node goes on serving. The config file takes
// no change meanwhile (file.Hold), nor do the login sessions (Logins.Hold);
// a SIGHUP (hup) or a stop (ctx) that came during the hand-off goes on to
// the new process; one that comes after it, while this process ends what
// it kept, is this process's alone.
func upgradeNode(ctx context.Context, n *node, proc *handoff.Process, file *operator.ConfigFile, hup <-chan os.Signal, dir string, stopTimeout time.Duration, logger *slog.Logger) (handed bool, err error) {
	began := time.Now()
	release := file.Hold("an upgrade is under way: the config applies to the new process once it has taken over; send the change again then")
	// Before the new process is started with the login sessions as they
	// are (the admin start part, or the state directory's file).
	releaseLogins := n.op.Logins.Hold("an upgrade is under way: log in or out again in a moment, on the new process")
	logger.Info("upgrade: starting the new process", "node", n.name, "binary", proc.Executable())
	child, err := proc.Upgrade(ctx, n.sendState)
	if err != nil {
		release()
		releaseLogins()
		attrs := []any{"node", n.name, "err", err}
		var ue *handoff.UpgradeError
		if errors.As(err, &ue) && ue.StderrTail != "" {
			attrs = append(attrs, "child_stderr", ue.StderrTail)
		}
		logger.Error("upgrade failed; this process keeps serving", attrs...)
		if werr := handoff.WriteStatus(dir, "failed: "+err.Error()); werr != nil {
			logger.Warn("upgrade: could not record the outcome for ringlb upgrade", "err", werr)
		}
		return false, nil
	}
	logger.Info("upgrade: the new process is ready; handing over", "node", n.name, "pid", child.PID)
	handCtx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	if err := n.handOff(handCtx, child.Conn); err != nil {
		logger.Error("upgrade: hand-off incomplete", "node", n.name, "err", err)
	}
	cancel()
	var state []byte
	if n.endState != nil {
		state = n.endState()
	}
	if err := child.Conn.End(state); err != nil {
		logger.Error("upgrade: the new process stopped listening", "node", n.name, "err", err)
	}
	taken, doneErr := child.Conn.WaitDone(takeOverGossipWait)
	if doneErr != nil && !errors.Is(doneErr, handoff.ErrTakeOverFailed) {
		if gone, how := child.Exited(childExitWait); gone {
			// Killed or crashed after it was ready: it took nothing
			// over and serves nothing. Recorded as a success, the
			// dead pid became systemd's main process and ringlb
			// upgrade printed "upgraded".
			doneErr = fmt.Errorf("%w: it exited during the hand-off (%v)", handoff.ErrTakeOverFailed, how)
		} else {
			logger.Warn("upgrade: no word from the new process after the hand-off", "node", n.name, "err", doneErr)
		}
	}
	child.Conn.Close()
	// A stop that came until now was for the node, which the new process
	// is from here on; one that comes later, while this process stops
	// (its kept tunnels run up to the shutdown timeout), is for this one
	// alone — `kill OLDPID` passed on stopped the node.
	stopForNode := ctx.Err() != nil
	// So for a reload: one taken until now was for the node; one that
	// comes later is for this process, which has nothing to reload, and is
	// said to be ignored — `kill -HUP OLDPID` passed on reloaded the node.
	reloadForNode := false
	select {
	case <-hup:
		reloadForNode = true
	default:
	}
	failed := errors.Is(doneErr, handoff.ErrTakeOverFailed)
	status := fmt.Sprintf("ok %d", child.PID)
	if failed {
		// Past the hand-off this process cannot serve again (it left
		// gossip, gave its tunnels away): said as a failure, not as the
		// success it was recorded as — ringlb upgrade printed "upgraded"
		// and exited 0 while nothing served.
		logger.Error("upgrade: the new process could not take over after the hand-off; nothing serves: start the node again", "node", n.name, "new_pid", child.PID, "err", doneErr)
		status = "lost: " + doneErr.Error()
	} else if _, err := daemon.SdNotify(false, fmt.Sprintf("MAINPID=%d", child.PID)); err != nil {
		// systemd follows the new process as the service's main process.
		logger.Warn("upgrade: systemd notification failed", "err", err)
	}
	if err := handoff.WriteStatus(dir, status); err != nil {
		logger.Warn("upgrade: could not record the outcome for ringlb upgrade", "err", err)
	}
	// What could not move (TLS tunnels) runs until the shutdown timeout.
	stopCtx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	stopped, ignoring := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(ignoring)
		for {
			select {
			case <-hup:
				logger.Warn("upgrade: SIGHUP ignored: this process has handed the node over and only ends what it kept", "node", n.name, "new_pid", child.PID)
			case <-stopped:
				return
			}
		}
	}()
	if err := n.stop(stopCtx); err != nil {
		logger.Warn("upgrade: stopping the old process", "node", n.name, "err", err)
	}
	close(stopped)
	<-ignoring
	if failed {
		return true, fmt.Errorf("upgrade: %w", doneErr)
	}
	// Signals this process took while it handed over were meant for the
	// node, which the new process is now: a stop was lost (the new one
	// served on), a reload too (an edit the new process had not read).
	forward := func(sig syscall.Signal, why string) {
		if err := syscall.Kill(child.PID, sig); err != nil {
			logger.Warn("upgrade: could not pass a signal to the new process", "signal", sig.String(), "pid", child.PID, "err", err)
			return
		}
		logger.Info("upgrade: "+why+" during the hand-off: passed to the new process", "signal", sig.String(), "pid", child.PID)
	}
	if stopForNode {
		forward(syscall.SIGTERM, "told to stop")
	}
	if reloadForNode {
		forward(syscall.SIGHUP, "told to reload")
	}
	logger.Info("upgrade done; the old process exits", "node", n.name, "new_pid", child.PID, "tunnels_taken", taken,
		"took", time.Since(began).Round(time.Millisecond))
	return true, nil
}

// childExitWait bounds how long an old process whose new one closed the
// hand-off socket without a word waits to learn whether it exited: the
// kernel closes a dying process's sockets before its parent hears of the
// exit.
const childExitWait = time.Second

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
	dir := fs.String("upgrade-dir", "", "the process's -upgrade-dir, where it records the outcome (default: read from the process: its flag, else its environment's default)")
	timeout := fs.Duration("timeout", 0, "how long to wait for the old process to exit (default: as long as its upgrade may take, from its -upgrade-timeout and -shutdown-timeout)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *pid <= 0 {
		return usageError(fs, "-pid is required")
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
		if d, err = handoff.DirOf(*pid, uid); err != nil {
			return fmt.Errorf("%w (give its directory with -upgrade-dir)", err)
		}
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
	// SIGUSR2 ends a process that does not catch it: only a node that
	// takes it for an upgrade is sent it.
	if err := checkUpgradable(*pid); err != nil {
		return err
	}
	status := handoff.StatusPath(d, *pid)
	// A record there now is a previous attempt's: passed over while it is
	// the same file (a new record is a new file, WriteStatus), and left
	// in place, as this one's is once read: another `ringlb upgrade` of
	// the node at once, whose SIGUSR2 joins this upgrade, reads it too
	// (removed, one of the two found none and reported a crash).
	// WriteStatus removes the records of processes long gone.
	earlier, _ := os.Stat(status)
	if earlier != nil && handingOver(status, *pid) {
		// Unless the node has handed over already and is on its way out
		// (its kept TLS tunnels run up to its shutdown timeout): that
		// upgrade is the one to report.
		earlier = nil
	}
	wait := *timeout
	if wait <= 0 {
		if wait, err = upgradeBound(*pid); err != nil {
			return err
		}
	}
	if err := syscall.Kill(*pid, syscall.SIGUSR2); err != nil {
		return fmt.Errorf("signal pid %d: %w", *pid, err)
	}
	deadline := time.After(wait)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline:
			return fmt.Errorf("pid %d still running after %s: the upgrade is still under way or failed (see its log)", *pid, wait)
		case <-tick.C:
		}
		if err := checkDir(); err != nil {
			return err
		}
		line := ""
		if fi, err := os.Stat(status); err == nil && (earlier == nil || !os.SameFile(fi, earlier)) {
			data, _ := os.ReadFile(status)
			line = strings.TrimSpace(string(data))
		}
		if reason, failed := strings.CutPrefix(line, "failed: "); failed {
			return fmt.Errorf("upgrade of pid %d failed, it keeps serving: %s", *pid, reason)
		}
		if reason, lost := strings.CutPrefix(line, "lost: "); lost {
			return fmt.Errorf("upgrade of pid %d failed after the hand-off, and neither process serves: start the node again: %s", *pid, reason)
		}
		if exited(*pid) {
			next, _ := strings.CutPrefix(line, "ok ")
			if _, err := strconv.Atoi(next); err != nil {
				return fmt.Errorf("pid %d exited without recording an upgrade (stopped or crashed?)", *pid)
			}
			fmt.Fprintf(stdout, "upgraded: pid %d handed over to pid %s and exited\n", *pid, next)
			return nil
		}
	}
}

// upgradeSlack is what upgradeBound adds for the steps that have no bound
// of their own beyond a hand-off frame's (the hand-off's end, the exit).
const upgradeSlack = 30 * time.Second

// upgradeBound is how long pid's upgrade may take, as upgradeNode runs it,
// from the flags it was started with: the new process's start
// (-upgrade-timeout), the hand-off and then the old process's stop
// (-shutdown-timeout each), the new process's take-over
// (takeOverGossipWait, then childExitWait), and upgradeSlack. A fixed
// wait (2 min) was shorter than that with a -shutdown-timeout of a minute:
// the command said the upgrade failed while it went on fine.
func upgradeBound(pid int) (time.Duration, error) {
	args, err := handoff.CommandLine(pid)
	if err != nil {
		return 0, err
	}
	flagOr := func(name string, def time.Duration) time.Duration {
		v, _ := handoff.FlagValue(args, name)
		if d, err := time.ParseDuration(v); err == nil && d > 0 {
			return d
		}
		return def // absent, or 0: the node runs on its default
	}
	ready := flagOr("upgrade-timeout", handoff.DefaultReadyTimeout)
	stop := flagOr("shutdown-timeout", stopTimeout)
	return ready + 2*stop + takeOverGossipWait + childExitWait + upgradeSlack, nil
}

// handingOver reports whether the outcome recorded at status is pid's hand-off
// under way: "ok N", N the process pid started (its child while pid runs;
// a record of a process gone, whose pid was taken again, names no child of
// the one that has it now).
func handingOver(status string, pid int) bool {
	data, _ := os.ReadFile(status)
	next, ok := strings.CutPrefix(strings.TrimSpace(string(data)), "ok ")
	if !ok {
		return false
	}
	child, err := strconv.Atoi(next)
	if err != nil {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", child))
	if err != nil {
		return false
	}
	// "pid (comm) state ppid ...": the fields follow the last ')'.
	s := string(stat)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(fields) > 1 && fields[1] == strconv.Itoa(pid)
}

// ringlbPackage is the package a ringlb binary is built from, as its
// build information records it.
const ringlbPackage = "github.com/ringlb/ringlb/cmd/ringlb"

// checkUpgradable refuses to upgrade pid unless it is a ringlb balancer or
// gslb: a ringlb binary (the build information of /proc/PID/exe, which is
// the binary the process runs even once a new one has been installed over
// it, as an upgrade's install does) run as one of them (its command line's
// subcommand, the role the node runs as: runRole's). Signalled blindly, a
// wrong pid (a typo, a pgrep that matched another process) was killed by
// SIGUSR2's default action, and an edge, which logs at once that it is
// not upgraded in place, was waited on for the whole -timeout.
func checkUpgradable(pid int) error {
	if _, err := os.Stat("/proc/self/exe"); err != nil {
		return nil // no procfs to ask (not Linux): the pid is signalled as given
	}
	exe := fmt.Sprintf("/proc/%d/exe", pid)
	info, err := buildinfo.ReadFile(exe)
	if err != nil || info.Path != ringlbPackage {
		what := "it runs no ringlb binary"
		if path, lerr := os.Readlink(exe); lerr == nil {
			what = "it runs " + path
		} else if err != nil {
			what = fmt.Sprintf("what it runs cannot be read: %v", err)
		}
		return fmt.Errorf("pid %d is not a ringlb balancer or gslb (%s): give the pid of one (under systemd: $MAINPID)", pid, what)
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return fmt.Errorf("pid %d's command line: %w", pid, err)
	}
	args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
	role := ""
	if len(args) > 1 {
		role = args[1]
	}
	switch {
	case upgradedInPlace(role):
		return nil
	case role == "edge":
		return fmt.Errorf("pid %d is an edge: edges are not upgraded in place; they drain and restart (SIGTERM drains it and stops it, its sessions handed on to the other edges; then start it again: systemctl restart under systemd), see docs/DESIGN.md, \"Shutdown and reload\"", pid)
	default:
		return fmt.Errorf("pid %d is not a ringlb balancer or gslb (it runs ringlb %s): give the pid of one (under systemd: $MAINPID)", pid, strings.Join(args[1:], " "))
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
