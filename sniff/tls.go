package sniff

// TLS wire constants (RFC 8446, RFC 6066, RFC 7301, RFC 9849).
const (
	recordTypeHandshake = 22
	recordHeaderLen     = 5
	maxRecordPayload    = 1 << 14 // plaintext limit, RFC 8446 section 5.1
	handshakeHeaderLen  = 4
	typeClientHello     = 1

	extServerName = 0x0000
	extALPN       = 0x0010
	extECH        = 0xfe0d

	sniHostName = 0
	echOuter    = 0
	echInner    = 1
)

var (
	errRecordType      = malformed("tls: record is not a handshake record")
	errRecordVersion   = malformed("tls: record version is not 3.x")
	errRecordEmpty     = malformed("tls: empty handshake record")
	errRecordOverflow  = malformed("tls: record longer than 2^14 bytes")
	errNotClientHello  = malformed("tls: first handshake message is not a ClientHello")
	errTrailingRecord  = malformed("tls: bytes after the ClientHello in its record")
	errHelloShort      = malformed("tls: ClientHello field overflows the message")
	errHelloVersion    = malformed("tls: ClientHello version is not 3.x")
	errSessionID       = malformed("tls: session id longer than 32 bytes")
	errCipherSuites    = malformed("tls: bad cipher suites length")
	errCompression     = malformed("tls: no compression methods")
	errExtensionsLen   = malformed("tls: extensions length does not match the message")
	errExtensionLen    = malformed("tls: extension overflows the extensions block")
	errDupSNI          = malformed("tls: two server_name extensions")
	errSNIList         = malformed("tls: server_name list length does not match the extension")
	errSNIEmpty        = malformed("tls: empty server_name list")
	errSNIType         = malformed("tls: server_name entry is not a host_name")
	errSNIMulti        = malformed("tls: more than one server_name entry")
	errSNIEntry        = malformed("tls: server_name entry overflows the list")
	errDupALPN         = malformed("tls: two ALPN extensions")
	errALPN            = malformed("tls: malformed ALPN extension")
	errDupECH          = malformed("tls: two encrypted_client_hello extensions")
	errECH             = malformed("tls: malformed encrypted_client_hello extension")
	errHelloTrailing   = malformed("tls: bytes after the ClientHello extensions")
	errHelloBodyLength = malformed("tls: ClientHello shorter than its fixed fields")
)

// sniffTLS walks the handshake records at the start of buf until they hold
// one whole ClientHello, then parses it. Every length is checked against
// its container and the caps as soon as its header has arrived, so a bad or
// oversized hello is refused before the rest of it is read.
func sniffTLS(buf []byte) (Result, error) {
	res := Result{Kind: TLS}
	if len(buf) > MaxTLSHello {
		buf = buf[:MaxTLSHello] // never look past the cap: decisions stay prefix-stable
	}
	var (
		hs      [handshakeHeaderLen]byte // handshake header, possibly split over records
		got     int                      // handshake bytes in the records walked so far
		need    = -1                     // 4 + ClientHello length, once known
		off     int                      // start of the current record in buf
		records int
	)
	for need < 0 || got < need {
		rest := buf[off:]
		if len(rest) >= 1 && rest[0] != recordTypeHandshake {
			return res, errRecordType
		}
		if len(rest) >= 2 && rest[1] != 3 {
			return res, errRecordVersion
		}
		if len(rest) < recordHeaderLen {
			if off+recordHeaderLen > MaxTLSHello {
				return res, ErrTooLarge
			}
			return res, ErrNeedMore
		}
		n := int(rest[3])<<8 | int(rest[4])
		switch {
		case n == 0:
			return res, errRecordEmpty // RFC 8446 5.1 forbids empty handshake fragments
		case n > maxRecordPayload:
			return res, errRecordOverflow
		case off+recordHeaderLen+n > MaxTLSHello:
			return res, ErrTooLarge
		}
		frag := rest[recordHeaderLen:min(len(rest), recordHeaderLen+n)]
		for i := 0; got+i < handshakeHeaderLen && i < len(frag); i++ {
			hs[got+i] = frag[i]
		}
		if got < 1 && len(frag) >= 1 && hs[0] != typeClientHello {
			return res, errNotClientHello
		}
		if need < 0 && got+len(frag) >= handshakeHeaderLen {
			need = handshakeHeaderLen + (int(hs[1])<<16 | int(hs[2])<<8 | int(hs[3]))
		}
		if need >= 0 {
			if got+n > need {
				// A client's first flight is this one message: anything
				// after it in the same record is malformed, not ours to skip.
				return res, errTrailingRecord
			}
			// Where the hello ends at the earliest: in this record, or in
			// a later one after at least one more record header.
			end := off + recordHeaderLen + need - got
			if got+n < need {
				end += recordHeaderLen
			}
			if end > MaxTLSHello {
				return res, ErrTooLarge
			}
		}
		if len(frag) < n {
			return res, ErrNeedMore
		}
		got += n
		off += recordHeaderLen + n
		records++
	}
	if records == 1 {
		return parseClientHello(res, buf[recordHeaderLen+handshakeHeaderLen:recordHeaderLen+need])
	}
	return parseFragmented(res, buf[:off], need)
}

// parseFragmented joins a ClientHello split over several records into a
// stack buffer and parses it. It is a separate function so that only this
// rare path pays for the buffer.
func parseFragmented(res Result, records []byte, need int) (Result, error) {
	var msg [MaxTLSHello]byte
	m := msg[:0]
	for len(records) > 0 {
		n := int(records[3])<<8 | int(records[4])
		m = append(m, records[recordHeaderLen:recordHeaderLen+n]...)
		records = records[recordHeaderLen+n:]
	}
	return parseClientHello(res, m[handshakeHeaderLen:need])
}

// reader is a bounds-checked cursor over a byte slice. Every read reports
// whether the bytes were there; nothing ever indexes past the end.
type reader []byte

func (r *reader) u8() (int, bool) {
	if len(*r) < 1 {
		return 0, false
	}
	v := int((*r)[0])
	*r = (*r)[1:]
	return v, true
}

func (r *reader) u16() (int, bool) {
	if len(*r) < 2 {
		return 0, false
	}
	v := int((*r)[0])<<8 | int((*r)[1])
	*r = (*r)[2:]
	return v, true
}

func (r *reader) bytes(n int) ([]byte, bool) {
	if n < 0 || len(*r) < n {
		return nil, false
	}
	v := (*r)[:n]
	*r = (*r)[n:]
	return v, true
}

// vec8 and vec16 read a vector with a one- or two-byte length prefix.
func (r *reader) vec8() (reader, bool) {
	n, ok := r.u8()
	if !ok {
		return nil, false
	}
	b, ok := r.bytes(n)
	return reader(b), ok
}

func (r *reader) vec16() (reader, bool) {
	n, ok := r.u16()
	if !ok {
		return nil, false
	}
	b, ok := r.bytes(n)
	return reader(b), ok
}

// parseClientHello parses a ClientHello body (after the handshake header).
func parseClientHello(res Result, body []byte) (Result, error) {
	fail := func(err error) (Result, error) { return Result{Kind: TLS}, err }
	r := reader(body)
	ver, ok := r.u16()
	if !ok {
		return fail(errHelloBodyLength)
	}
	if ver>>8 != 3 {
		return fail(errHelloVersion)
	}
	if _, ok := r.bytes(32); !ok { // random
		return fail(errHelloBodyLength)
	}
	sid, ok := r.vec8()
	if !ok {
		return fail(errHelloShort)
	}
	if len(sid) > 32 {
		return fail(errSessionID)
	}
	suites, ok := r.vec16()
	if !ok {
		return fail(errHelloShort)
	}
	if len(suites) < 2 || len(suites)%2 != 0 {
		return fail(errCipherSuites)
	}
	comp, ok := r.vec8()
	if !ok {
		return fail(errHelloShort)
	}
	if len(comp) < 1 {
		return fail(errCompression)
	}
	if len(r) == 0 {
		return res, nil // a hello without extensions (SSL 3.0 style)
	}
	exts, ok := r.vec16()
	if !ok {
		return fail(errExtensionsLen)
	}
	if len(r) != 0 {
		return fail(errHelloTrailing)
	}
	var sawSNI, sawALPN bool
	var name []byte
	var alpn reader
	for len(exts) > 0 {
		typ, ok := exts.u16()
		if !ok {
			return fail(errExtensionLen)
		}
		data, ok := exts.vec16()
		if !ok {
			return fail(errExtensionLen)
		}
		switch typ {
		case extServerName:
			if sawSNI {
				return fail(errDupSNI)
			}
			sawSNI = true
			n, err := parseSNI(data)
			if err != nil {
				return fail(err)
			}
			name = n
		case extALPN:
			if sawALPN {
				return fail(errDupALPN)
			}
			sawALPN = true
			if err := checkALPN(data); err != nil {
				return fail(err)
			}
			alpn = data
		case extECH:
			if res.ECH {
				return fail(errDupECH)
			}
			if err := checkECH(data); err != nil {
				return fail(err)
			}
			res.ECH = true
		}
	}
	if sawSNI {
		n, err := normalizeName(name)
		if err != nil {
			return fail(&malformedError{msg: "tls: bad server name", err: err})
		}
		res.Name = n
	}
	if sawALPN {
		res.ALPN = alpnList(alpn)
	}
	return res, nil
}

// parseSNI returns the one host_name of a server_name extension. Like
// OpenSSL, it accepts exactly one entry, of type host_name: servers differ
// on lists with more, so such a list is refused rather than guessed at.
func parseSNI(data reader) ([]byte, error) {
	list, ok := data.vec16()
	if !ok || len(data) != 0 {
		return nil, errSNIList
	}
	if len(list) == 0 {
		return nil, errSNIEmpty
	}
	typ, _ := list.u8()
	if typ != sniHostName {
		return nil, errSNIType
	}
	name, ok := list.vec16()
	if !ok {
		return nil, errSNIEntry
	}
	if len(list) != 0 {
		return nil, errSNIMulti
	}
	return name, nil
}

// checkALPN validates a protocol_name_list: at least one name, every name
// one to 255 bytes, lengths exactly filling the extension.
func checkALPN(data reader) error {
	list, ok := data.vec16()
	if !ok || len(data) != 0 || len(list) == 0 {
		return errALPN
	}
	for len(list) > 0 {
		p, ok := list.vec8()
		if !ok || len(p) == 0 {
			return errALPN
		}
	}
	return nil
}

// alpnList copies up to maxALPN protocol names from a checked list with a
// single string allocation.
func alpnList(data reader) []string {
	list, _ := data.vec16()
	count := 0
	for l := list; len(l) > 0 && count < maxALPN; count++ {
		l.vec8()
	}
	all := string(list)
	out := make([]string, 0, count)
	pos := 0
	for range count {
		n := int(all[pos])
		out = append(out, all[pos+1:pos+1+n])
		pos += 1 + n
	}
	return out
}

// checkECH validates the framing of an encrypted_client_hello extension
// (RFC 9849 section 5): an outer one carries a cipher suite, config id,
// enc and a non-empty payload; an inner one is a single type byte.
func checkECH(data reader) error {
	typ, ok := data.u8()
	if !ok {
		return errECH
	}
	switch typ {
	case echInner:
		if len(data) != 0 {
			return errECH
		}
		return nil
	case echOuter:
		if _, ok := data.bytes(4 + 1); !ok { // kdf, aead, config_id
			return errECH
		}
		if _, ok := data.vec16(); !ok { // enc
			return errECH
		}
		payload, ok := data.vec16()
		if !ok || len(payload) == 0 || len(data) != 0 {
			return errECH
		}
		return nil
	}
	return errECH
}
