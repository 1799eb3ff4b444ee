package bench

// OptionsError is a run's options refused before anything started (a
// value out of range, an unknown mode): the caller was called wrongly,
// which a command line reports as a usage error (exit 2), not as a run
// that failed.
type OptionsError struct{ Err error }

func (e *OptionsError) Error() string { return e.Err.Error() }
func (e *OptionsError) Unwrap() error { return e.Err }
