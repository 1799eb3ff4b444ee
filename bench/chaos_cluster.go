package bench

// The chaos scenario's steps against a running cluster: shell commands an
// operator gives (start an edge, kill one) and the balancers' admin API
// (drain an edge, watch the ring, look a key up), as the wire contract
// describes it (docs/CONTRACT.md, "Paths").

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"

	"github.com/ringlb/ringlb/configs"
)

// ChaosAdmin is the balancers' admin API as the chaos steps use it: drains
// and lookups go through the first URL; a change is in once every URL's
// ring has it.
type ChaosAdmin struct {
	// URLs are admin listeners, http://host:port (no path).
	URLs []string
	// Token is the admin bearer token ("": none, e.g. a loopback admin
	// port without balancer.admin.token_file). Never logged.
	Token string
	// Client sends the requests; default: a client with a 10s timeout
	// that follows no redirect (configs.NoRedirect).
	Client *http.Client
}

// ChaosRing is what GET /api/ring says: the ring's version and members.
type ChaosRing struct {
	Version uint64
	Members []string // sorted names
}

// Admin API paths and headers (the contract's names, docs/CONTRACT.md): this
// package is a client of the contract and imports no server package (of
// configs, only what a client of another node's admin API follows).
const (
	adminRingPath   = "/api/ring"
	adminLookupPath = "/api/lookup"
	// adminHeader is the CSRF proof every admin POST needs besides (or
	// instead of, on a loopback port without a token) the bearer token.
	adminHeader = "X-Ringlb-Admin"
	// maxAdminBody bounds what is read of an admin answer.
	maxAdminBody = 1 << 20
	// ringPoll is how often a ring is read while a change is awaited: the
	// admin API has no push, so this wait polls (bounded by its ctx).
	ringPoll = 100 * time.Millisecond
)

// adminDrainPath is POST {admin}/api/nodes/{name}/drain.
func adminDrainPath(edge string) string { return "/api/nodes/" + url.PathEscape(edge) + "/drain" }

// NewChaosAdmin checks the admin URLs (http(s)://host:port, a trailing
// slash allowed) and returns the client for them.
func NewChaosAdmin(urls []string, token string) (*ChaosAdmin, error) {
	a := &ChaosAdmin{Token: token}
	var errs []error
	if len(urls) == 0 {
		errs = append(errs, errors.New("at least one admin URL is required"))
	}
	for _, u := range urls {
		u = strings.TrimSuffix(strings.TrimSpace(u), "/")
		if p, err := url.Parse(u); err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" || p.Path != "" || p.RawQuery != "" {
			errs = append(errs, fmt.Errorf("admin URL %q must be http://host:port or https://host:port", u))
		}
		a.URLs = append(a.URLs, u)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return a, nil
}

func (a *ChaosAdmin) client() *http.Client {
	if a.Client != nil {
		return a.Client
	}
	// Only the URLs given are asked: a redirect is an answer, and followed
	// it took the bearer token to wherever it pointed.
	return &http.Client{Timeout: 10 * time.Second, Transport: adminTransport, CheckRedirect: configs.NoRedirect}
}

// adminTransport keeps as many connections to an admin port as a check
// point's lookups run at once: with net/http's default of two, each round
// of lookups closes and reopens the rest, and the port counts a closed
// connection toward the client's share (admin.max_connections_per_ip)
// until it has read its end. It goes through no proxy of the environment
// (the default's HTTP_PROXY): the token is for the admin port alone.
var adminTransport = func() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = ownerLookups
	t.Proxy = nil
	return t
}()

// do sends one admin request and decodes a 2xx JSON answer into out (nil:
// ignore it). An error answer's text comes back in the error: the admin
// API's errors are constant messages, never a secret.
func (a *ChaosAdmin) do(ctx context.Context, method, u string, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return err
	}
	if a.Token != "" {
		req.Header.Set("Authorization", "Bearer "+a.Token)
	}
	if method != http.MethodGet {
		req.Header.Set(adminHeader, "1")
	}
	resp, err := a.client().Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, u, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxAdminBody))
	if err != nil {
		return fmt.Errorf("%s %s: read answer: %w", method, u, err)
	}
	if resp.StatusCode/100 != 2 {
		var e struct{ Error string }
		if json.Unmarshal(body, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(body[:min(len(body), 200)]))
		}
		return fmt.Errorf("%s %s: %s: %s", method, u, resp.Status, e.Error)
	}
	if out != nil {
		if err := json.Unmarshal(body, out); err != nil {
			return fmt.Errorf("%s %s: %w", method, u, err)
		}
	}
	return nil
}

// Ring reads one admin URL's ring.
func (a *ChaosAdmin) Ring(ctx context.Context, admin string) (ChaosRing, error) {
	var v struct {
		Version uint64
		Members []struct{ Name string }
	}
	if err := a.do(ctx, http.MethodGet, admin+adminRingPath, &v); err != nil {
		return ChaosRing{}, err
	}
	r := ChaosRing{Version: v.Version}
	for _, m := range v.Members {
		r.Members = append(r.Members, m.Name)
	}
	slices.Sort(r.Members)
	return r, nil
}

// rings reads every admin URL's ring.
func (a *ChaosAdmin) rings(ctx context.Context) ([]ChaosRing, error) {
	out := make([]ChaosRing, len(a.URLs))
	for i, u := range a.URLs {
		r, err := a.Ring(ctx, u)
		if err != nil {
			return nil, err
		}
		out[i] = r
	}
	return out, nil
}

// Drain asks the edge to drain, through the first admin URL.
func (a *ChaosAdmin) Drain(ctx context.Context, edge string) error {
	return a.do(ctx, http.MethodPost, a.URLs[0]+adminDrainPath(edge), nil)
}

// Lookup names the edge that owns key on the first admin URL's ring.
func (a *ChaosAdmin) Lookup(ctx context.Context, key string) (string, error) {
	var v struct{ Owner string }
	if err := a.do(ctx, http.MethodGet, a.URLs[0]+adminLookupPath+"?key="+url.QueryEscape(key), &v); err != nil {
		return "", err
	}
	return v.Owner, nil
}

// AwaitJoin runs change, then waits until every admin URL's ring has a
// member it did not have before the change.
func (a *ChaosAdmin) AwaitJoin(ctx context.Context, change func(context.Context) error) error {
	return a.await(ctx, change, "a new member", func(before, now ChaosRing) bool {
		for _, m := range now.Members {
			if !slices.Contains(before.Members, m) {
				return true
			}
		}
		return false
	})
}

// AwaitLeave runs change, then waits until edge is on no admin URL's ring
// (edge "": until every ring has lost a member it had before).
func (a *ChaosAdmin) AwaitLeave(ctx context.Context, edge string, change func(context.Context) error) error {
	what := edge + " gone"
	if edge == "" {
		what = "a member gone"
	}
	return a.await(ctx, change, what, func(before, now ChaosRing) bool {
		if edge != "" {
			return !slices.Contains(now.Members, edge)
		}
		for _, m := range before.Members {
			if !slices.Contains(now.Members, m) {
				return true
			}
		}
		return false
	})
}

func (a *ChaosAdmin) await(ctx context.Context, change func(context.Context) error, what string, done func(before, now ChaosRing) bool) error {
	before, err := a.rings(ctx)
	if err != nil {
		return err
	}
	if err := change(ctx); err != nil {
		return err
	}
	t := time.NewTicker(ringPoll)
	defer t.Stop()
	for i := 0; i < len(a.URLs); {
		now, err := a.Ring(ctx, a.URLs[i])
		if err == nil && done(before[i], now) {
			i++
			continue
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = fmt.Errorf("ring %v", now.Members)
			}
			return fmt.Errorf("%s: waiting for %s: %w (last: %v)", a.URLs[i], what, ctx.Err(), err)
		case <-t.C:
		}
	}
	return nil
}

// ChaosCluster makes the scenario's steps for a running cluster out of an
// operator's shell commands and, when Admin is set, the balancers' admin
// API.
type ChaosCluster struct {
	// Admin, when set, drains edges and tells when a change is in (the
	// rings have it); without it a command's exit is the change being in.
	Admin *ChaosAdmin
	// Output is where commands write (default os.Stderr). A file, not a
	// pipe: a process a command leaves running (an edge started in the
	// background) keeps writing to it after this tool has exited, where a
	// pipe would break and kill it with SIGPIPE.
	Output *os.File
}

// AddStep is the scale-out step: command starts a new edge; with Admin the
// step ends once every ring has a member it did not have.
func (c ChaosCluster) AddStep(command string) ChaosStep {
	return ChaosStep{Name: "scale-out", Do: func(ctx context.Context) error {
		if c.Admin == nil {
			return c.shell(ctx, command)
		}
		return c.Admin.AwaitJoin(ctx, func(ctx context.Context) error { return c.shell(ctx, command) })
	}}
}

// DrainStep is the drain step: POST {admin}/api/nodes/{edge}/drain; it ends
// once edge is on no ring. It needs Admin.
func (c ChaosCluster) DrainStep(edge string) ChaosStep {
	return ChaosStep{Name: "drain", Edge: edge, Do: func(ctx context.Context) error {
		if c.Admin == nil {
			return errors.New("a drain goes through a balancer's admin API: no admin URL given")
		}
		return c.Admin.AwaitLeave(ctx, edge, func(ctx context.Context) error { return c.Admin.Drain(ctx, edge) })
	}}
}

// KillStep is the crash step: command kills edge (e.g. kill -9 PID,
// systemctl kill -s KILL ringlb-edge@2); with Admin it ends once edge (""
// when not named: any member) is on no ring.
func (c ChaosCluster) KillStep(command, edge string) ChaosStep {
	return ChaosStep{Name: "crash", Edge: edge, Do: func(ctx context.Context) error {
		if c.Admin == nil {
			return c.shell(ctx, command)
		}
		return c.Admin.AwaitLeave(ctx, edge, func(ctx context.Context) error { return c.shell(ctx, command) })
	}}
}

// shell runs command with /bin/sh -c, bounded by ctx.
func (c ChaosCluster) shell(ctx context.Context, command string) error {
	out := c.Output
	if out == nil {
		out = os.Stderr
	}
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", command)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("command %q: %w", command, err)
	}
	return nil
}
