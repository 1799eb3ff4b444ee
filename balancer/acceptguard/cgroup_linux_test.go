package acceptguard

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"testing"
)

// fakeCgroups lays out the files openCgroupAt reads, under a temporary
// directory: mountinfo and /proc/self/cgroup lines (%s: the directory), a
// statm, and each cgroup directory's files (path relative to the
// directory → name → content).
type fakeCgroups struct {
	root string
}

func newFakeCgroups(t *testing.T, mountinfo, procCgroup, statm string, files map[string]map[string]string) fakeCgroups {
	t.Helper()
	f := fakeCgroups{root: t.TempDir()}
	f.write(t, "mountinfo", fmt.Sprintf(mountinfo, f.root))
	f.write(t, "cgroup", procCgroup)
	f.write(t, "statm", statm)
	for dir, fs := range files {
		for name, content := range fs {
			f.write(t, filepath.Join(dir, name), content)
		}
	}
	return f
}

func (f fakeCgroups) write(t *testing.T, path, content string) {
	t.Helper()
	p := filepath.Join(f.root, path)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (f fakeCgroups) open(t *testing.T) *cgroup {
	t.Helper()
	c, err := openCgroupAt(filepath.Join(f.root, "mountinfo"), filepath.Join(f.root, "cgroup"), filepath.Join(f.root, "statm"))
	if err != nil {
		t.Fatal(err)
	}
	if c != nil {
		t.Cleanup(c.close)
	}
	return c
}

const (
	mib     = 1 << 20
	noLimit = "9223372036854771712\n" // cgroup v1's "no limit"
)

// shareOf is CgroupShare of limit.
func shareOf(limit int64) int64 { return int64(CgroupShare * float64(limit)) }

// statmOf is a /proc/self/statm whose anonymous resident memory is anon.
func statmOf(anon int64) string {
	page := int64(os.Getpagesize())
	shared := int64(300)
	return fmt.Sprintf("100000 %d %d 500 0 9000 0\n", anon/page+shared, shared)
}

// The cgroups a process reads: its own and every ancestor with a limit,
// cgroup v1 (memory controller, total_rss) or v2 (memory.max, anon), under
// a mount whose root is the hierarchy's or a namespace's; the room each
// leaves is CgroupShare of its limit less what its other processes hold,
// and the least of them counts.
func TestCgroupRoom(t *testing.T) {
	const v1Mount = "30 25 0:29 %[2]s %[1]s/memory rw,relatime shared:9 - cgroup cgroup rw,memory\n"
	v1 := func(root string) string {
		return "25 1 0:20 / / rw - ext4 /dev/root rw\n" + fmt.Sprintf(v1Mount, "%[1]s", root) +
			"31 25 0:30 / %[1]s/unified rw - cgroup2 cgroup2 rw\n"
	}
	for _, tc := range []struct {
		name       string
		mountinfo  string
		procCgroup string
		files      map[string]map[string]string
		own        int64
		wantDirs   []string
		wantRoom   int64
		wantLimit  int64
	}{{
		name:       "v1, the limit on the parent",
		mountinfo:  v1("/"),
		procCgroup: "5:cpu:/\n4:memory:/unit/proc\n0::/\n",
		files: map[string]map[string]string{
			"memory/unit/proc": {"memory.limit_in_bytes": noLimit, "memory.stat": "rss 1\ntotal_rss 999\n"},
			"memory/unit":      {"memory.limit_in_bytes": "1073741824\n", "memory.stat": "cache 5\nrss 0\ntotal_cache 9\ntotal_rss 629145600\n"},
			"memory":           {"memory.limit_in_bytes": noLimit, "memory.stat": "total_rss 1\n"},
		},
		own:       200 * mib,
		wantDirs:  []string{"memory/unit"},
		wantRoom:  shareOf(1<<30) - 400*mib,
		wantLimit: 1 << 30,
	}, {
		name:       "v1, two limits: the tighter room counts",
		mountinfo:  v1("/"),
		procCgroup: "4:memory:/unit/proc\n",
		files: map[string]map[string]string{
			"memory/unit/proc": {"memory.limit_in_bytes": "536870912\n", "memory.stat": "total_rss 314572800\n"},
			"memory/unit":      {"memory.limit_in_bytes": "1073741824\n", "memory.stat": "total_rss 524288000\n"},
		},
		own:       300 * mib,
		wantDirs:  []string{"memory/unit/proc", "memory/unit"},
		wantRoom:  shareOf(512*mib) - 0, // alone in its own: 460 MiB; the parent: 921 − 200
		wantLimit: 512 * mib,
	}, {
		name:       "v1 in a namespace: the mount's root is the container's cgroup",
		mountinfo:  v1("/kubepods/pod1"),
		procCgroup: "4:memory:/kubepods/pod1/c1\n",
		files: map[string]map[string]string{
			"memory/c1": {"memory.limit_in_bytes": "268435456\n", "memory.stat": "total_rss 157286400\n"},
		},
		own:       50 * mib,
		wantDirs:  []string{"memory/c1"},
		wantRoom:  shareOf(256*mib) - 100*mib,
		wantLimit: 256 * mib,
	}, {
		name:       "v2",
		mountinfo:  "25 1 0:20 / / rw - ext4 /dev/root rw\n31 25 0:30 / %[1]s/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n",
		procCgroup: "0::/system.slice/ringlb.service\n",
		files: map[string]map[string]string{
			"unified/system.slice/ringlb.service": {"memory.max": "268435456\n", "memory.stat": "anon_thp 0\nanon 209715200\nfile 5\n"},
			"unified/system.slice":                {"memory.max": "max\n", "memory.stat": "anon 999999999\n"},
		},
		own:       100 * mib,
		wantDirs:  []string{"unified/system.slice/ringlb.service"},
		wantRoom:  shareOf(256*mib) - 100*mib,
		wantLimit: 256 * mib,
	}, {
		name:       "pages charged elsewhere: the others hold nothing",
		mountinfo:  v1("/"),
		procCgroup: "4:memory:/unit\n",
		files: map[string]map[string]string{
			"memory/unit": {"memory.limit_in_bytes": "268435456\n", "memory.stat": "total_rss 10485760\n"},
		},
		own:       100 * mib,
		wantDirs:  []string{"memory/unit"},
		wantRoom:  shareOf(256 * mib),
		wantLimit: 256 * mib,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeCgroups(t, tc.mountinfo, tc.procCgroup, statmOf(tc.own), tc.files)
			c := f.open(t)
			if c == nil {
				t.Fatal("no cgroup found")
			}
			var dirs []string
			for _, d := range c.dirs() {
				rel, _ := filepath.Rel(f.root, d)
				dirs = append(dirs, rel)
			}
			if fmt.Sprint(dirs) != fmt.Sprint(tc.wantDirs) {
				t.Errorf("cgroups read %v, want %v", dirs, tc.wantDirs)
			}
			room, limit, ok := c.read(CgroupShare)
			if !ok || room != tc.wantRoom || limit != tc.wantLimit {
				t.Errorf("room %d MiB of a %d MiB limit (ok %v), want %d MiB of %d MiB", room/mib, limit/mib, ok, tc.wantRoom/mib, tc.wantLimit/mib)
			}
			if n := testing.AllocsPerRun(10, func() { c.read(CgroupShare) }); n != 0 {
				t.Errorf("a read allocates %v times", n)
			}
		})
	}
}

// No limit anywhere, or no memory cgroup: nothing to read, and Watch is
// what it was.
func TestCgroupNone(t *testing.T) {
	for name, procCgroup := range map[string]string{
		"no limit":  "4:memory:/unit\n",
		"no cgroup": "1:name=systemd:/\n",
	} {
		t.Run(name, func(t *testing.T) {
			f := newFakeCgroups(t, "30 25 0:29 / %[1]s/memory rw - cgroup cgroup rw,memory\n", procCgroup, statmOf(0),
				map[string]map[string]string{"memory/unit": {"memory.limit_in_bytes": noLimit, "memory.stat": "total_rss 1\n"}})
			if c := f.open(t); c != nil {
				t.Errorf("read cgroups %v", c.dirs())
			}
		})
	}
}

// The runtime's limit follows the room the cgroup leaves the process: down
// when its other processes take memory (never below a sixteenth of its
// own), back up to its own — never above — when they give it back; small
// changes are let be. The low mark follows it.
func TestLimitFollowsTheCgroup(t *testing.T) {
	prev := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(prev) })
	const cgLimit = 1 << 30
	own := shareOf(cgLimit)
	stat := func(anon int64) map[string]map[string]string {
		return map[string]map[string]string{"memory/unit": {"memory.limit_in_bytes": fmt.Sprint(cgLimit), "memory.stat": fmt.Sprintf("total_rss %d\n", anon)}}
	}
	f := newFakeCgroups(t, "30 25 0:29 / %[1]s/memory rw - cgroup cgroup rw,memory\n", "4:memory:/unit\n", statmOf(100*mib), stat(100*mib))
	m := &Memory{}
	var logs logLines
	s := memorySampler{m: m, limit: own, own: own, cg: f.open(t), log: logs.logger()}
	m.limit.Store(own)
	debug.SetMemoryLimit(own) // what Watch starts from

	for _, step := range []struct {
		others int64 // what the cgroup's other processes hold
		want   int64
	}{
		{0, own},
		{400 * mib, own - 400*mib}, // the old process of an upgrade
		{405 * mib, own - 400*mib}, // 5 MiB more: under 1/64, let be
		{2 * cgLimit, own / 16},    // more than the whole cgroup: the floor
		{0, own},                   // all given back: its own again
		{-50 * mib, own},           // pages charged elsewhere: never above its own
	} {
		f.write(t, "memory/unit/memory.stat", fmt.Sprintf("total_rss %d\n", max(100*mib+step.others, 0)))
		s.shareCgroup()
		if got := debug.SetMemoryLimit(-1); got != step.want || m.limit.Load() != step.want || s.limit != step.want {
			t.Errorf("others hold %d MiB: runtime limit %d MiB, Memory's %d MiB, want %d MiB", step.others/mib, got/mib, m.limit.Load()/mib, step.want/mib)
		}
	}
	if logs.count(msgLimitShared) != 1 || logs.count(msgLimitOwn) != 1 {
		t.Errorf("%d %q and %d %q lines, want 1 each", logs.count(msgLimitShared), msgLimitShared, logs.count(msgLimitOwn), msgLimitOwn)
	}
}
