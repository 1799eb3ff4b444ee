package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/ringlb/ringlb/configs"
)

// runProbe is a one-shot HTTP health check for container HEALTHCHECKs and
// scripts (the image has no curl): exit 0 on a 2xx answer, 1 otherwise.
func runProbe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flagSet("probe", "Requests a URL once, following no redirect: exit 0 on a 2xx answer, 1 otherwise.\nMeant for Docker HEALTHCHECK, keepalived scripts and Kubernetes hooks.", stderr)
	url := fs.String("url", "http://127.0.0.1:8080"+configs.PathHealth, "URL to request")
	timeout := fs.Duration("timeout", 2*time.Second, "give up after this long")
	method := fs.String("method", http.MethodGet, "HTTP method (POST for an edge's /api/drain in a preStop hook)")
	tokenFile := fs.String("token-file", "", "admin token file: sent as Authorization: Bearer (an admin port beyond loopback needs it)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	var token []byte
	if *tokenFile != "" {
		var err error
		if token, err = configs.ReadToken(*tokenFile); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, *method, *url, nil)
	if err != nil {
		return err
	}
	if token != nil {
		req.Header.Set("Authorization", "Bearer "+string(token))
	}
	// An admin POST must show it is no other web site's (CSRF rule).
	req.Header.Set(configs.HeaderAdmin, "1")
	// The answer is this URL's, as keepalived's and HAProxy's checks take
	// it: a redirect is no 2xx, and following one would report another
	// URL's health and send the token there. Nor does it go through a
	// proxy of the environment (http.DefaultTransport's): the token is for
	// the admin port, and a proxy is another host, reached in clear.
	client := &http.Client{Transport: &http.Transport{Proxy: nil}, CheckRedirect: configs.NoRedirect}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", *url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s: %s", *url, resp.Status)
	}
	fmt.Fprintf(stdout, "%s: %s\n", *url, resp.Status)
	return nil
}
