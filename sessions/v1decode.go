package sessions

import (
	"bytes"
	"encoding/json"
	"unicode/utf8"
)

// inboundView is a decoded client envelope (inbound) whose fields point
// into the frame it came in: valid while the reader holds that frame.
type inboundView struct {
	typ      []byte
	data, ts []byte // raw JSON values, verbatim; nil when absent
	after    uint64
	afterSet bool
	epoch    []byte
	token    []byte // a refresh's join token
}

// decodeInbound decodes a ringlb.v1 client envelope. The usual envelope
// ({"type":"msg","data":...}, a ping, a resume) is read in place without
// allocating: encoding/json's scanner checks that the frame is valid JSON
// (json.Valid, whose scanner is pooled), then scanInbound finds the fields.
// Anything scanInbound does not read exactly as encoding/json would (keys
// in another case or with escapes, strings with escapes or invalid UTF-8,
// a null type, an after that is not a plain uint64) and every invalid frame go to
// json.Unmarshal, the reference, which also words the error.
// FuzzDecodeInbound checks the two agree.
func decodeInbound(payload []byte) (inboundView, error) {
	if json.Valid(payload) {
		if v, ok := scanInbound(payload); ok {
			return v, nil
		}
	}
	return unmarshalInbound(payload)
}

// unmarshalInbound is decodeInbound's reference path.
func unmarshalInbound(payload []byte) (inboundView, error) {
	var in inbound
	if err := json.Unmarshal(payload, &in); err != nil {
		return inboundView{}, err
	}
	v := inboundView{typ: []byte(in.Type), data: in.Data, ts: in.TS, epoch: []byte(in.Epoch), token: []byte(in.Token)}
	if in.After != nil {
		v.after, v.afterSet = *in.After, true
	}
	return v, nil
}

// scanInbound reads the envelope's fields from b, valid JSON. ok is false
// when b holds something only encoding/json should decide.
func scanInbound(b []byte) (v inboundView, ok bool) {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return v, false // not an object: json.Unmarshal's error
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return v, true
	}
	for i < len(b) {
		// A key: a string without escapes (an escaped key could spell a
		// field's name).
		end, escaped := stringEnd(b, i)
		if escaped {
			return v, false
		}
		key := b[i+1 : end-1]
		i = skipSpace(b, end)
		i = skipSpace(b, i+1) // the ':'
		valEnd := valueEnd(b, i)
		val := b[i:valEnd]
		switch string(key) {
		case "type", "epoch", "token":
			// A plain string; null leaves json's field as it was, an
			// escape needs unquoting, invalid UTF-8 becomes U+FFFD: all
			// to json.
			if val[0] != '"' {
				return v, false
			}
			if _, esc := stringEnd(b, i); esc || !utf8.Valid(val) {
				return v, false
			}
			switch string(key) {
			case "type":
				v.typ = val[1 : len(val)-1]
			case "epoch":
				v.epoch = val[1 : len(val)-1]
			default:
				v.token = val[1 : len(val)-1]
			}
		case "data":
			v.data = val
		case "ts":
			v.ts = val
		case "after":
			if string(val) == "null" {
				v.after, v.afterSet = 0, false
				break
			}
			n, ok := parseUint64(val)
			if !ok {
				return v, false // negative, fraction, overflow: json's type error
			}
			v.after, v.afterSet = n, true
		default:
			// json matches keys case-insensitively: another case of a
			// field's name is a field.
			for _, name := range [...]string{"type", "data", "ts", "after", "epoch", "token"} {
				if bytes.EqualFold(key, []byte(name)) {
					return v, false
				}
			}
		}
		i = skipSpace(b, valEnd)
		if b[i] == '}' {
			return v, true
		}
		i = skipSpace(b, i+1) // the ','
	}
	return v, false
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// stringEnd returns the index after the string starting at b[i] (a '"'),
// and whether it holds an escape.
func stringEnd(b []byte, i int) (end int, escaped bool) {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			escaped = true
			j++
		case '"':
			return j + 1, escaped
		}
	}
	return len(b), escaped
}

// valueEnd returns the index after the JSON value starting at b[i].
func valueEnd(b []byte, i int) int {
	switch b[i] {
	case '"':
		end, _ := stringEnd(b, i)
		return end
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				end, _ := stringEnd(b, j)
				j = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return j + 1
				}
			}
		}
		return len(b)
	}
	j := i
	for j < len(b) && b[j] != ',' && b[j] != '}' && b[j] != ']' && b[j] != ' ' && b[j] != '\t' && b[j] != '\n' && b[j] != '\r' {
		j++
	}
	return j
}

// parseUint64 parses plain decimal digits that fit a uint64.
func parseUint64(b []byte) (uint64, bool) {
	if len(b) == 0 || len(b) > 20 {
		return 0, false
	}
	var n uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if n > (1<<64-1-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}
