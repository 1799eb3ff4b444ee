package acceptguard

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// cgroup is what the memory sampler reads of the memory cgroups this
// process is in, when one has a limit: the limit of each (the process's
// own cgroup and its ancestors, up to the controller's mount) and the
// anonymous memory its processes hold — the heaps and stacks of every
// process in it, this one's included, not the page cache the kernel
// reclaims first. The files stay open and are read again from their start
// at every sample, into one buffer: sampling allocates nothing.
type cgroup struct {
	scopes []cgroupScope
	statm  *os.File // /proc/self/statm: this process's resident and shared pages
	buf    []byte
	page   int64
}

// cgroupScope is one cgroup with a memory limit.
type cgroupScope struct {
	dir         string
	limit, stat *os.File
	anonKey     []byte // memory.stat's key of the anonymous memory of the cgroup and its descendants
	v2          bool
}

// cgroupLimitNone: cgroup v1 writes "no limit" as the largest page-aligned
// int64; anything from here up is no limit.
const cgroupLimitNone = 1 << 62

// openCgroup opens this process's memory cgroups that have a limit; nil
// (and no error) when none has one, or the process is in none.
func openCgroup() (*cgroup, error) {
	return openCgroupAt("/proc/self/mountinfo", "/proc/self/cgroup", "/proc/self/statm")
}

// openCgroupAt is openCgroup with the files it starts from named (tests).
func openCgroupAt(mountinfo, procCgroup, statm string) (*cgroup, error) {
	dir, mount, v2, err := findMemoryCgroup(mountinfo, procCgroup)
	if err != nil || dir == "" {
		return nil, err
	}
	c := &cgroup{buf: make([]byte, 16<<10), page: int64(os.Getpagesize())}
	// Every level with a limit, up to the mount: a parent's limit bounds
	// the processes of all its descendants together.
	for d := dir; ; d = filepath.Dir(d) {
		if sc, ok := openScope(c, d, v2); ok {
			c.scopes = append(c.scopes, sc)
		}
		if d == mount || !strings.HasPrefix(d, mount) || d == filepath.Dir(d) {
			break
		}
	}
	if len(c.scopes) == 0 {
		return nil, nil
	}
	if c.statm, err = os.Open(statm); err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

// openScope opens the files of the cgroup d if it has a memory limit.
func openScope(c *cgroup, d string, v2 bool) (cgroupScope, bool) {
	sc := cgroupScope{dir: d, v2: v2, anonKey: []byte("total_rss")}
	limitFile := "memory.limit_in_bytes"
	if v2 {
		limitFile, sc.anonKey = "memory.max", []byte("anon")
	}
	var err error
	if sc.limit, err = os.Open(filepath.Join(d, limitFile)); err != nil {
		return sc, false
	}
	if l, ok := c.readLimit(sc.limit); !ok || l <= 0 {
		sc.limit.Close()
		return sc, false
	}
	if sc.stat, err = os.Open(filepath.Join(d, "memory.stat")); err != nil {
		sc.limit.Close()
		return sc, false
	}
	return sc, true
}

// findMemoryCgroup returns the directory of this process's memory cgroup
// and the mount it is under: the cgroup v1 memory controller's when there
// is one, else the cgroup v2 hierarchy's. "" when the process is in none.
func findMemoryCgroup(mountinfo, procCgroup string) (dir, mount string, v2 bool, err error) {
	cg, err := os.ReadFile(procCgroup)
	if err != nil {
		return "", "", false, err
	}
	var v1Path, v2Path string
	for _, line := range strings.Split(string(cg), "\n") {
		// hierarchy-ID:controller-list:cgroup-path
		id, rest, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		ctrls, path, ok := strings.Cut(rest, ":")
		switch {
		case !ok:
		case id != "0" && slices.Contains(strings.Split(ctrls, ","), "memory"):
			v1Path = path
		case id == "0" && ctrls == "":
			v2Path = path
		}
	}
	path := v1Path
	v2 = v1Path == ""
	if v2 {
		path = v2Path
	}
	if path == "" {
		return "", "", false, nil
	}
	f, err := os.Open(mountinfo)
	if err != nil {
		return "", "", false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		root, point, fstype, super, ok := parseMountInfo(sc.Text())
		if !ok {
			continue
		}
		switch {
		case v2 && fstype == "cgroup2":
		case !v2 && fstype == "cgroup" && slices.Contains(strings.Split(super, ","), "memory"):
		default:
			continue
		}
		// The cgroup's path is relative to the hierarchy's root; the
		// mount shows the hierarchy from root (a container's namespace
		// shows its own cgroup as "/").
		rel := path
		if root != "/" {
			var ok bool
			if rel, ok = strings.CutPrefix(path, root); !ok || (rel != "" && rel[0] != '/') {
				continue
			}
		}
		dir := filepath.Join(point, rel)
		if !strings.HasPrefix(dir, point) {
			continue
		}
		return dir, point, v2, nil
	}
	if err := sc.Err(); err != nil {
		return "", "", false, err
	}
	return "", "", false, fmt.Errorf("memory cgroup %s: no mount of its hierarchy", path)
}

// parseMountInfo splits a /proc/self/mountinfo line into the fields
// findMemoryCgroup needs (proc_pid_mountinfo(5)):
// "36 35 98:0 ROOT POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER".
func parseMountInfo(line string) (root, point, fstype, super string, ok bool) {
	pre, post, found := strings.Cut(line, " - ")
	if !found {
		return "", "", "", "", false
	}
	a, b := strings.Fields(pre), strings.Fields(post)
	if len(a) < 5 || len(b) < 3 {
		return "", "", "", "", false
	}
	return unescapeMount(a[3]), unescapeMount(a[4]), b[0], b[2], true
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space...).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// errCgroupRead: a cgroup file gave no number where one was expected.
var errCgroupRead = errors.New("cgroup memory file: no number")

// read returns the room the cgroups leave this process: of every scope,
// share of its limit less what the scope's other processes hold, the
// least of them (it may be negative: the others hold more than the share),
// and that scope's limit. ok is false when no figure could be read (the
// sampler then keeps its last one).
func (c *cgroup) read(share float64) (room, limit int64, ok bool) {
	own, ok := c.ownAnon()
	if !ok {
		return 0, 0, false
	}
	found := false
	for i := range c.scopes {
		sc := &c.scopes[i]
		l, ok := c.readLimit(sc.limit)
		if !ok || l <= 0 {
			continue // unreadable, or the limit was lifted
		}
		anon, ok := c.readKey(sc.stat, sc.anonKey)
		if !ok {
			continue
		}
		// Pages this process faulted in before it joined the cgroup are
		// charged elsewhere: then the cgroup's count is less than its own.
		others := max(anon-own, 0)
		if r := int64(share*float64(l)) - others; !found || r < room {
			room, limit, found = r, l, true
		}
	}
	return room, limit, found
}

// readLimit reads a limit file: -1 for no limit.
func (c *cgroup) readLimit(f *os.File) (int64, bool) {
	b, ok := c.readAll(f)
	if !ok {
		return 0, false
	}
	b = bytes.TrimSpace(b)
	if string(b) == "max" {
		return -1, true
	}
	n, err := parseInt(b)
	if err != nil {
		return 0, false
	}
	if n >= cgroupLimitNone {
		return -1, true
	}
	return n, true
}

// readKey reads the value of key in a flat-keyed file (memory.stat).
func (c *cgroup) readKey(f *os.File, key []byte) (int64, bool) {
	b, ok := c.readAll(f)
	if !ok {
		return 0, false
	}
	for len(b) > 0 {
		line := b
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		if v, found := bytes.CutPrefix(line, key); found && len(v) > 0 && v[0] == ' ' {
			n, err := parseInt(bytes.TrimSpace(v))
			return n, err == nil
		}
	}
	return 0, false
}

// ownAnon is this process's anonymous resident memory: statm's resident
// pages less its shared ones (file-backed and shmem).
func (c *cgroup) ownAnon() (int64, bool) {
	b, ok := c.readAll(c.statm)
	if !ok {
		return 0, false
	}
	// size resident shared text lib data dt
	var fields [3]int64
	for i := range fields {
		b = bytes.TrimLeft(b, " ")
		end := bytes.IndexAny(b, " \n")
		if end < 0 {
			end = len(b)
		}
		n, err := parseInt(b[:end])
		if err != nil {
			return 0, false
		}
		fields[i], b = n, b[end:]
	}
	return max(fields[1]-fields[2], 0) * c.page, true
}

// readAll reads f whole from its start into c.buf (cgroup and proc files
// are generated anew on a read from offset 0); false when it is empty,
// unreadable or larger than the buffer.
func (c *cgroup) readAll(f *os.File) ([]byte, bool) {
	n, err := f.ReadAt(c.buf, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, false
	}
	return c.buf[:n], n > 0 && n < len(c.buf)
}

// parseInt parses a non-negative decimal number without allocating.
func parseInt(b []byte) (int64, error) {
	if len(b) == 0 || len(b) > 19 {
		return 0, errCgroupRead
	}
	var n int64
	for _, d := range b {
		if d < '0' || d > '9' {
			return 0, errCgroupRead
		}
		n = n*10 + int64(d-'0')
	}
	return n, nil
}

// close closes the cgroup's files.
func (c *cgroup) close() {
	for _, sc := range c.scopes {
		sc.limit.Close()
		sc.stat.Close()
	}
	if c.statm != nil {
		c.statm.Close()
	}
}

// dirs names the cgroups read (for the log).
func (c *cgroup) dirs() []string {
	out := make([]string, len(c.scopes))
	for i, sc := range c.scopes {
		out[i] = sc.dir
	}
	return out
}
