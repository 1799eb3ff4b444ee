package gslb

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/miekg/dns"

	"github.com/ringlb/ringlb/configs"
)

// zone is one authoritative zone, immutable once loaded: its records indexed
// by lower-case owner name and type.
type zone struct {
	origin string // lower case, fully qualified
	// wire is origin in wire form, for matching a question's name without
	// unpacking it (an RRL slip, rrl.go).
	wire  []byte
	soa   *dns.SOA
	names map[string]map[uint16][]dns.RR
	// cfg is the zone's configuration (transfer rules).
	cfg configs.Zone
	// source is where its records were read, for errors: the file's
	// absolute path, or "records of ORIGIN" (inline records).
	source string
	// allow is cfg.Transfer.Allow, parsed: who may AXFR.
	allow []netip.Prefix
	// signer signs answers to queries with DO (dnssec.go); nil: unsigned.
	signer *signer
	// xfr is the signed zone's last transfer (transfer.go).
	xfr xfrCache
	// cuts are the names below the apex with an NS RRset: delegations
	// (delegation.go); cutWires the same in wire form, lower case, for
	// an RRL slip (rrl.go).
	cuts     map[string]bool
	cutWires [][]byte
	// dnames are the zone's DNAME records by owner (dname.go); nil in a
	// zone without one, which then costs its answers nothing.
	dnames map[string]*dns.DNAME
	// extra is the additional records of each NS, MX and SRV RRset
	// (additional.go), made when the state is built; nil before.
	extra map[rrsetID][]dns.RR
	// at is where each name's first record was written, for the problems
	// found after the parse (data below a DNAME); packed, the buffer each
	// record is packed into once, to see it has a wire form (fits). Both
	// are the load's only (nil after).
	at     map[string]recordPos
	packed []byte
}

// regularFiles opens a zone file's $INCLUDEs as the file itself is opened
// (configs.OpenRegular). The parser hands it absolute paths (the zone's
// file is made absolute, relative includes are joined to its directory)
// without their leading slash, as an fs.FS takes names.
type regularFiles struct{ at *recordLines }

func (rf regularFiles) Open(name string) (fs.File, error) {
	f, _, err := configs.OpenRegular("/" + name)
	if err != nil {
		return nil, err
	}
	return &lineFile{File: f, lineReader: rf.at.reader(f, "/"+name)}, nil
}

// lineFile is an included file read through its lineReader: the parser
// takes a reader with ReadByte as it is, so every byte it reads is counted.
type lineFile struct {
	fs.File
	*lineReader
}

func (f *lineFile) Read(p []byte) (int, error) { return f.lineReader.Read(p) }

// recordLines says where each record the parser returns was written: the
// parser's records carry no position, and a problem found in one (a second
// SOA, a CNAME beside other data) must name its file and line. Every file
// the parser reads, the zone's and its includes, goes through a lineReader
// of it; the one read last holds the record just returned.
type recordLines struct{ last *lineReader }

func (at *recordLines) reader(r io.Reader, name string) *lineReader {
	return &lineReader{r: bufio.NewReader(r), at: at, name: name, line: 1, blank: true}
}

// next is where the record the parser just returned starts.
func (at *recordLines) next() recordPos {
	lr := at.last
	if lr == nil {
		return recordPos{}
	}
	p := recordPos{file: lr.name, line: lr.start}
	lr.start = 0
	return p
}

// lineReader counts a file's lines as the parser reads it, and keeps the
// line where the record being read starts: the first line since the last
// record with something on it that is neither a comment nor a directive
// ($TTL, $ORIGIN, $INCLUDE). The parser reads no further than the end of a
// record before it returns it.
type lineReader struct {
	r     *bufio.Reader
	at    *recordLines
	name  string
	line  int
	blank bool // nothing but blanks read on this line yet
	start int  // the line the record being read starts on; 0: none yet
}

func (lr *lineReader) ReadByte() (byte, error) {
	c, err := lr.r.ReadByte()
	if err != nil {
		return c, err
	}
	lr.at.last = lr
	switch {
	case c == '\n':
		lr.line++
		lr.blank = true
	case lr.blank && (c == ' ' || c == '\t' || c == '\r'):
	case lr.blank:
		lr.blank = false
		if c != ';' && c != '$' && lr.start == 0 {
			lr.start = lr.line
		}
	}
	return c, nil
}

func (lr *lineReader) Read(p []byte) (int, error) {
	for i := range p {
		c, err := lr.ReadByte()
		if err != nil {
			return i, err
		}
		p[i] = c
	}
	return len(p), nil
}

// recordPos is where a record was written: a zone file and its line, or
// (record > 0) the zone's inline record number record (Records[record-1]).
type recordPos struct {
	file   string
	line   int
	record int
}

func (p recordPos) String() string {
	if p.line == 0 {
		return p.file
	}
	return fmt.Sprintf("%s line %d", p.file, p.line)
}

// maxZoneProblems is how many of a zone's problems its load says; those
// after are counted. A zone is checked whole, as nsd-checkzone and
// kzonecheck check one: one problem a run had an operator fix a zone of
// many in as many runs. The bound keeps a zone of a million bad records
// from being a million lines of log. A config file's bound, as its own
// problems are.
const maxZoneProblems = configs.MaxProblems

// zoneProblems is every problem of a zone its load finds, each named where
// it is: a record's by the config file's line of it and its field path
// (gslb.zones[0].records[3]) for inline records, by the zone file's line
// and the field naming the file (gslb.zones[1].file) for a zone file —
// as configs.Load names its own problems (configs.Place). A zone not read
// from a config file (built in Go) is named by its origin.
type zoneProblems struct {
	z    *zone
	list []error
	more int
	// starts is the line of the inline records' text (joined by newlines)
	// each record starts on, for the record a parser's line is in.
	starts []int
}

func newZoneProblems(z *zone) *zoneProblems {
	ps := &zoneProblems{z: z}
	line := 1
	for _, r := range z.cfg.Records {
		ps.starts = append(ps.starts, line)
		line += strings.Count(r, "\n") + 1
	}
	return ps
}

// full counts one more problem when maxZoneProblems are said already.
func (ps *zoneProblems) full() bool {
	if len(ps.list) < maxZoneProblems {
		return false
	}
	ps.more++
	return true
}

// inline is whether the zone's records are the config's (not a file's).
func (ps *zoneProblems) inline() bool { return ps.z.cfg.File == "" }

// recordAt is where the record on line of the inline records' text was
// written: its number in the list.
func (ps *zoneProblems) recordAt(line int) recordPos {
	i, _ := slices.BinarySearch(ps.starts, line+1) // the first record after it
	return recordPos{file: ps.z.source, line: line, record: max(i, 1)}
}

// field is the zone's field its records are read from.
func (ps *zoneProblems) field() string {
	if ps.inline() {
		return "records"
	}
	return "file"
}

// record adds the problem msg of the record written at at.
func (ps *zoneProblems) record(at recordPos, msg error) {
	if ps.full() {
		return
	}
	if ps.inline() {
		if at.record == 0 {
			ps.zone("records", msg)
			return
		}
		if p, ok := ps.z.cfg.RecordPlace(at.record - 1); ok {
			ps.list = append(ps.list, p.Problem("%v", msg))
		} else {
			ps.list = append(ps.list, fmt.Errorf("zone %s: records[%d]: %w", ps.z.origin, at.record-1, msg))
		}
		return
	}
	ps.zone("file", fmt.Errorf("%s: %w", at, msg))
}

// zone adds msg, a problem of the zone's field (a path below it: "file",
// "records", "dnssec").
func (ps *zoneProblems) zone(field string, msg error) {
	if !ps.full() {
		ps.list = append(ps.list, ps.placed(field, msg))
	}
}

// placed is msg named at the zone's field: where the config file has it,
// or by the zone's origin for a zone not read from one.
func (ps *zoneProblems) placed(field string, msg error) error {
	if p, ok := ps.z.cfg.Place(field); ok {
		return p.Problem("%v", msg)
	}
	if field != "file" && field != "" {
		msg = fmt.Errorf("%s: %w", field, msg)
	}
	return fmt.Errorf("zone %s: %w", ps.z.origin, msg)
}

// syntax adds the parser's error, err: a zone file's names the file and
// the line; inline records' is the record's.
func (ps *zoneProblems) syntax(err error) {
	err = configs.ZoneError(err)
	if !ps.inline() {
		if !strings.HasPrefix(err.Error(), "/") {
			// A problem in an included file is named by the path the
			// parser opened it by (regularFiles): absolute, without its
			// leading slash.
			err = errors.New("/" + err.Error())
		}
		ps.zone("file", err)
		return
	}
	// "dns: bad A A at line: 2:13", the line in the records' text: the
	// record's, named as the record, with its column.
	msg := err.Error()
	var line, col int
	i := strings.LastIndex(msg, " at line: ")
	if i < 0 {
		ps.zone("records", err)
		return
	}
	if _, serr := fmt.Sscanf(msg[i:], " at line: %d:%d", &line, &col); serr != nil {
		ps.zone("records", err)
		return
	}
	if len(ps.starts) == 0 {
		ps.zone("records", err)
		return
	}
	at := ps.recordAt(line)
	where := fmt.Sprintf("column %d", col)
	if first := ps.starts[at.record-1]; line > first {
		where = fmt.Sprintf("its line %d, column %d", line-first+1, col)
	}
	ps.record(at, fmt.Errorf("%s at %s", msg[:i], where))
}

// err is every problem, and how many more there are; nil when none.
func (ps *zoneProblems) err() error {
	if len(ps.list) == 0 {
		return nil
	}
	list := ps.list
	if ps.more > 0 {
		list = append(slices.Clip(list), ps.placed(ps.field(), fmt.Errorf("and %d more problems, not said (the first %d are)", ps.more, maxZoneProblems)))
	}
	return errors.Join(list...)
}

// loadZone parses a zone from its master file or inline records; nets says
// what a client network is, for its signer. A zone with a problem is
// refused with every problem found (zoneProblems), not its first only.
func loadZone(zc configs.Zone, nets configs.RateLimit) (*zone, error) {
	z := &zone{origin: dns.CanonicalName(configs.UnpackedName(dns.Fqdn(zc.Origin))), names: map[string]map[uint16][]dns.RR{}, cfg: zc}
	ps := newZoneProblems(z)
	for i, c := range zc.Transfer.Allow {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			ps.zone(fmt.Sprintf("transfer.allow[%d]", i), err)
			continue
		}
		z.allow = append(z.allow, p.Masked())
	}
	var zp *dns.ZoneParser
	lines := &recordLines{}
	z.at = map[string]recordPos{}
	defer func() { z.at, z.packed = nil, nil }()
	if zc.File != "" {
		// A regular file only, its includes too: a FIFO put in the place
		// of either after the check would hold a reload in open(2).
		// Made absolute for the includes (regularFiles), not cleaned:
		// "link/../zone" is the zone beside the link's target, as the
		// kernel resolves it, and was opened so before; its includes
		// are joined to its directory as named, cleaned, as ever.
		file := zc.File
		if !filepath.IsAbs(file) {
			wd, err := os.Getwd()
			if err != nil {
				ps.zone("file", err)
				return nil, ps.err()
			}
			file = wd + string(filepath.Separator) + file
		}
		z.source = file
		f, _, err := configs.OpenRegular(file)
		if err != nil {
			ps.zone("file", err)
			return nil, ps.err()
		}
		defer f.Close()
		zp = dns.NewZoneParser(lines.reader(f, file), z.origin, file)
		zp.SetIncludeAllowed(true) // a file may include others, as in BIND
		zp.SetIncludeFS(regularFiles{lines})
	} else {
		// Inline records include nothing: they come with the config, which
		// the config API takes from an operator's client. The parser
		// names no file: a problem is named by its record (syntax).
		z.source = "records of " + z.origin
		zp = dns.NewZoneParser(lines.reader(strings.NewReader(strings.Join(zc.Records, "\n")), z.source), z.origin, "")
	}
	for rr, ok := zp.Next(); ok; rr, ok = zp.Next() {
		pos := lines.next()
		if ps.inline() {
			pos = ps.recordAt(pos.line)
		}
		if err := z.add(rr, pos); err != nil {
			ps.record(pos, err)
		}
	}
	if err := zp.Err(); err != nil {
		// The parser reads no further: what the zone lacks (its SOA, if
		// written after) or holds below a DNAME is not known.
		ps.syntax(err)
		return nil, ps.err()
	}
	if z.soa == nil {
		if ps.inline() {
			ps.zone("records", errors.New("no SOA record at the apex"))
		} else {
			ps.zone("file", fmt.Errorf("%s: no SOA record at the apex", z.source))
		}
	}
	for _, o := range z.occludedByDNAME() {
		ps.record(o.at, o.err)
	}
	if err := ps.err(); err != nil {
		return nil, err
	}
	z.wire = make([]byte, 256)
	n, err := dns.PackDomainName(z.origin, z.wire, 0, nil, false)
	if err != nil {
		ps.zone("origin", err)
		return nil, ps.err()
	}
	z.wire = z.wire[:n]
	for c := range z.cuts {
		w := make([]byte, 256)
		n, err := dns.PackDomainName(c, w, 0, nil, false)
		if err != nil {
			ps.record(z.firstAt(c), err)
			return nil, ps.err()
		}
		z.cutWires = append(z.cutWires, w[:n])
	}
	if zc.DNSSEC != nil {
		sg, err := newSigner(z.origin, zc.DNSSEC, nets)
		if err != nil {
			ps.zone("dnssec", err)
			return nil, ps.err()
		}
		z.signer = sg
	}
	return z, nil
}

// add puts rr, written at pos, in the zone, or says why it may not be (the
// record's problem alone: loadZone says where).
func (z *zone) add(rr dns.RR, pos recordPos) error {
	h := rr.Header()
	h.Name = dns.CanonicalName(configs.UnpackedName(h.Name))
	canonicalTargets(rr)
	if !dns.IsSubDomain(z.origin, h.Name) {
		return fmt.Errorf("%s is outside the zone", h.Name)
	}
	if h.Class != dns.ClassINET {
		// Answers are of class IN: a record of another class would be
		// answered as if it were IN. NSD and Knot refuse it too.
		return fmt.Errorf("%s %s of class %s: a zone holds class IN only", h.Name, typeName(h.Rrtype), dns.Class(h.Class))
	}
	if metaType(h.Rrtype) {
		// Types that exist only in messages (RFC 6895 3.1): an OPT in a
		// transfer's answers is a malformed message (RFC 6891 6.1.1), and
		// an AXFR or ANY record could never be asked for.
		return fmt.Errorf("%s %s: a meta-type, which exists only in messages, never in a zone (RFC 6895 3.1); remove it", h.Name, typeName(h.Rrtype))
	}
	if err := z.fits(rr); err != nil {
		return fmt.Errorf("%s %s: %v", h.Name, typeName(h.Rrtype), err)
	}
	if z.cfg.DNSSEC != nil && dnssecType(h.Rrtype) && (h.Name == z.origin || h.Rrtype != dns.TypeDNSKEY && h.Rrtype != dns.TypeCDS && h.Rrtype != dns.TypeCDNSKEY) {
		// A signed zone's keys, signatures and NSEC records are the
		// signer's: ones from the file would contradict them.
		return fmt.Errorf("%s %s in the zone's data; it is signed online (dnssec), remove it", h.Name, typeName(h.Rrtype))
	}
	byType := z.names[h.Name]
	for _, old := range byType[h.Rrtype] {
		if dns.IsDuplicate(old, rr) {
			// The same record again (RFC 2181 5: an RRset has no
			// duplicates): one, as NSD and Knot load it.
			return nil
		}
	}
	if h.Rrtype == dns.TypeSOA {
		if h.Name != z.origin {
			return fmt.Errorf("%s: a SOA not at the apex (%s); a zone has one SOA, at its apex", h.Name, z.origin)
		}
		if z.soa != nil {
			return fmt.Errorf("%s: a second SOA; a zone has one", h.Name)
		}
		z.soa = rr.(*dns.SOA)
	}
	if old := byType[h.Rrtype]; len(old) > 0 && h.Rrtype != dns.TypeRRSIG && old[0].Header().Ttl != h.Ttl {
		// An RRset has one TTL (RFC 2181 5.2: a client treats differing
		// ones as an error): its first record's, as NSD and BIND take it.
		h.Ttl = old[0].Header().Ttl
	}
	if other := besideCNAME(byType, h.Rrtype); other != 0 {
		// RFC 1034 3.6.2, RFC 2181 10.1: a CNAME's name has no other data
		// (but its DNSSEC records); which would be answered is anyone's
		// guess.
		return fmt.Errorf("%s has a CNAME and %s: a name with a CNAME has no other data (RFC 1034 3.6.2); remove one", h.Name, typeName(other))
	}
	if byType == nil {
		byType = z.addName(h.Name)
	}
	if h.Rrtype == dns.TypeCNAME && len(byType[dns.TypeCNAME]) > 0 {
		return fmt.Errorf("%s has two CNAMEs: a CNAME is one name's only alias; keep one", h.Name)
	}
	if h.Rrtype == dns.TypeDNAME {
		// A singleton (RFC 6672 2.4): one target for every name below.
		if z.dnames[h.Name] != nil {
			return fmt.Errorf("%s has two DNAMEs (more than one DNAME at a name): a DNAME is the one target of every name below; keep one", h.Name)
		}
		if z.dnames == nil {
			z.dnames = map[string]*dns.DNAME{}
		}
		z.dnames[h.Name] = rr.(*dns.DNAME)
	}
	if h.Rrtype == dns.TypeNS && h.Name != z.origin {
		if z.cuts == nil {
			z.cuts = map[string]bool{}
		}
		z.cuts[h.Name] = true
	}
	byType[h.Rrtype] = append(byType[h.Rrtype], rr)
	if _, ok := z.at[h.Name]; !ok {
		z.at[h.Name] = pos
	}
	return nil
}

// canonicalTargets writes the names in rr's RDATA that answers look up —
// a CNAME's and a DNAME's target (chased), an NS, MX or SRV target (its
// addresses added, additional.go) — in configs.UnpackedName form, their case kept: on
// the wire they are the same names.
func canonicalTargets(rr dns.RR) {
	switch v := rr.(type) {
	case *dns.CNAME:
		v.Target = configs.UnpackedName(v.Target)
	case *dns.DNAME:
		v.Target = configs.UnpackedName(v.Target)
	case *dns.NS:
		v.Ns = configs.UnpackedName(v.Ns)
	case *dns.MX:
		v.Mx = configs.UnpackedName(v.Mx)
	case *dns.SRV:
		v.Target = configs.UnpackedName(v.Target)
	}
}

// besideCNAME is a type that may not be at one name with the other
// (RFC 1034 3.6.2: a CNAME and anything but the DNSSEC records RRSIG and
// NSEC, RFC 4035 2.5 and 2.3), when adding a record of type t to a name
// of byType; 0 when none.
func besideCNAME(byType map[uint16][]dns.RR, t uint16) uint16 {
	free := func(t uint16) bool { return t == dns.TypeCNAME || t == dns.TypeRRSIG || t == dns.TypeNSEC }
	if free(t) && t != dns.TypeCNAME {
		return 0
	}
	if t == dns.TypeCNAME {
		// The lowest type, so that the error is the same every time.
		var first uint16
		for other, rrs := range byType {
			if len(rrs) > 0 && !free(other) && (first == 0 || other < first) {
				first = other
			}
		}
		return first
	}
	if t != dns.TypeCNAME && len(byType[dns.TypeCNAME]) > 0 {
		return t
	}
	return 0
}

// fits says why rr has no wire form, nil when it has: a name in it longer
// than 255 octets, RDATA longer than 65,535 octets or that the type's
// format does not allow (a bad hex or base64 field); or one too big for a
// message of a zone transfer (xfrRecordBytes). The parser takes each;
// served, none could be packed into an answer or a transfer. The reason
// quotes nothing of the record.
func (z *zone) fits(rr dns.RR) error {
	if z.packed == nil {
		z.packed = make([]byte, dns.MaxMsgSize+512)
	}
	n, err := dns.PackRR(rr, z.packed, 0, nil, false)
	if err == nil && n > 255 {
		// The library packs a name longer than 255 octets; unpacking
		// refuses it, as every reader of the answer would. A record
		// shorter than that holds no such name (and costs no unpacking).
		_, _, err = dns.UnpackRR(z.packed[:n], 0)
	}
	switch {
	case err == nil && n > xfrRecordBytes:
		return fmt.Errorf("its wire form is %d octets, more than the %d a zone transfer's message holds beside its header, question, OPT and TSIG", n, xfrRecordBytes)
	case err == nil:
		return nil
	case errors.Is(err, dns.ErrLongDomain):
		return errors.New("a name in it is longer than 255 octets")
	default:
		return errors.New("its RDATA has no wire form (a field its type does not take, or longer than 65,535 octets)")
	}
}

// firstAt is where the first record of name was written (the zone's
// source when it is not known).
func (z *zone) firstAt(name string) recordPos {
	if p, ok := z.at[name]; ok {
		return p
	}
	return recordPos{file: z.source}
}

// where is where a record was written, said in a problem of another
// field (a managed name below the zone's delegation): the zone file and its
// line, or the config file's line of an inline record and its path.
// Where the record is not known (after the load, which keeps no
// positions), the zone's file or records.
func (z *zone) where(at recordPos) string {
	var p configs.Place
	var ok bool
	switch {
	case at.record > 0:
		if p, ok = z.cfg.RecordPlace(at.record - 1); !ok {
			return fmt.Sprintf("records[%d] of zone %s", at.record-1, z.origin)
		}
	case at.line > 0 || z.cfg.File != "":
		return at.String()
	default:
		if p, ok = z.cfg.Place("records"); !ok {
			return z.source
		}
	}
	return fmt.Sprintf("%s:%d, %s", p.File, p.Line, p.Path)
}

// metaType: a type no zone holds (RFC 6895 3.1): 0, OPT, and 128 to 255,
// the block of meta- and query types (TKEY, TSIG, IXFR, AXFR, MAILB,
// MAILA, ANY and those unassigned).
func metaType(t uint16) bool {
	return t == 0 || t == dns.TypeOPT || t >= 128 && t <= 255
}

// typeName is t's mnemonic, or TYPEn (RFC 3597).
func typeName(t uint16) string {
	if name, ok := dns.TypeToString[t]; ok && t != dns.TypeNone {
		return name
	}
	return fmt.Sprintf("TYPE%d", t)
}

// addName makes name (lower case, in z) exist in z's tree, and returns its
// records (none when it is new). The names between it and the apex exist
// too, as empty non-terminals: a name below them does.
func (z *zone) addName(name string) map[uint16][]dns.RR {
	if byType, ok := z.names[name]; ok {
		return byType
	}
	byType := map[uint16][]dns.RR{}
	z.names[name] = byType
	for n := name; n != z.origin; {
		i, end := dns.NextLabel(n, 0)
		if end {
			break
		}
		n = n[i:]
		if _, ok := z.names[n]; !ok {
			z.names[n] = map[uint16][]dns.RR{}
		}
	}
	return byType
}

// lookup returns the records of name (lower case) and whether the name
// exists, falling back to a wildcard at the closest encloser (RFC 4592).
func (z *zone) lookup(name string) (map[uint16][]dns.RR, bool) {
	if byType, ok := z.names[name]; ok {
		return byType, true
	}
	// Closest encloser: the longest existing ancestor.
	for n := name; n != z.origin; {
		i, end := dns.NextLabel(n, 0)
		if end {
			break
		}
		n = n[i:]
		if _, ok := z.names[n]; ok {
			if wild, ok := z.names["*."+n]; ok {
				return wild, true
			}
			return nil, false
		}
	}
	return nil, false
}
