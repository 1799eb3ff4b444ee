//go:build race

package sessions

// raceDetector: this test binary runs under the race detector.
const raceDetector = true
