package main

import (
	"flag"
	"os"
	"testing"
	"time"
)

// endToEndTimeout replaces go test's default ten-minute alarm for this
// package: its tests start real clusters of processes and run scenarios of
// minutes (about seven in all on a quiet two-core machine), so on a busy
// one the default fired while every test was still making progress. Each
// test bounds its own waits; this alarm is only the hang detector behind
// them.
const endToEndTimeout = 30 * time.Minute

// goTestDefaultTimeout is what go test passes as -test.timeout when given
// none (it always passes one, so a default cannot be told from the same
// value given): any other -timeout is kept.
const goTestDefaultTimeout = 10 * time.Minute

func TestMain(m *testing.M) {
	flag.Parse()
	if f := flag.Lookup("test.timeout"); f != nil && f.Value.String() == goTestDefaultTimeout.String() {
		if err := flag.Set("test.timeout", endToEndTimeout.String()); err != nil {
			panic(err)
		}
	}
	os.Exit(m.Run())
}
