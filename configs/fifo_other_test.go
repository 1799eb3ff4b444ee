//go:build !unix

package configs

import "errors"

func mkfifo(string) error { return errors.New("no FIFOs") }
