//go:build !unix

package sessions

import "time"

// processCPUTime is not known on this platform: edges announce CPU 0.
func processCPUTime() (time.Duration, bool) { return 0, false }
