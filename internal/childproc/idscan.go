package childproc

// idScanner finds the top-level "id" of a JSON object fed to it in chunks,
// keeping only a few bytes: a child's message too large to keep can still
// be matched to the request it answers, wherever in the line its id is.
type idScanner struct {
	depth    int
	inString bool
	escape   bool
	isKey    bool   // the string being read is a member name at depth 1
	key      []byte // that name (bounded)
	keyLong  bool
	lastKey  string // the name whose value comes next at depth 1
	expect   bool   // depth 1: a member name comes next
	capture  bool   // reading the value of "id"
	id       []byte // bounded
	idDone   bool
	overflow bool
}

const maxScannedID = 256

func (s *idScanner) feed(b []byte) {
	for _, c := range b {
		if s.idDone {
			return
		}
		if s.capture {
			s.captureByte(c)
			continue
		}
		if s.inString {
			switch {
			case s.escape:
				s.escape = false
			case c == '\\':
				s.escape = true
			case c == '"':
				s.inString = false
				if s.isKey {
					s.lastKey = string(s.key)
					if s.keyLong {
						s.lastKey = ""
					}
					s.isKey = false
				}
				continue
			}
			if s.isKey {
				if len(s.key) < 16 {
					s.key = append(s.key, c)
				} else {
					s.keyLong = true
				}
			}
			continue
		}
		switch c {
		case '"':
			s.inString = true
			s.isKey = s.depth == 1 && s.expect
			s.key, s.keyLong = s.key[:0], false
			s.expect = false
		case '{', '[':
			s.depth++
			s.expect = s.depth == 1 && c == '{'
		case '}', ']':
			s.depth--
		case ',':
			if s.depth == 1 {
				s.expect = true
			}
		case ':':
			if s.depth == 1 && s.lastKey == "id" {
				s.capture = true
				s.id = s.id[:0]
			}
		}
	}
}

// captureByte reads the id's value: a string or a number.
func (s *idScanner) captureByte(c byte) {
	if len(s.id) == 0 {
		switch {
		case c == ' ' || c == '\t' || c == '\r' || c == '\n':
			return
		case c == '"' || c == '-' || (c >= '0' && c <= '9'):
			s.id = append(s.id, c)
			return
		default: // null, object, array: no usable id
			s.capture, s.idDone = false, true
			s.id = nil
			return
		}
	}
	if s.id[0] == '"' {
		if len(s.id) >= maxScannedID {
			s.overflow, s.idDone, s.id = true, true, nil
			return
		}
		s.id = append(s.id, c)
		if c == '"' && s.id[len(s.id)-2] != '\\' {
			s.idDone = true
		}
		return
	}
	switch {
	case c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E' || (c >= '0' && c <= '9'):
		if len(s.id) >= maxScannedID {
			s.overflow, s.idDone, s.id = true, true, nil
			return
		}
		s.id = append(s.id, c)
	default:
		s.idDone = true
	}
}

// result is the id found, or nil.
func (s *idScanner) result() []byte {
	if s.overflow || len(s.id) == 0 || (s.id[0] == '"' && !s.idDone) {
		return nil
	}
	return s.id
}
