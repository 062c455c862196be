package hsm

import (
	"fmt"
	"strconv"
	"strings"
)

// URI is the subset of an RFC 7512 PKCS#11 URI that names a key on a token, plus the
// query attributes saying which module to load and where the PIN comes from.
type URI struct {
	Token      string // path attribute "token" (label)
	Serial     string // "serial"
	SlotID     *uint  // "slot-id"
	Object     string // "object" (CKA_LABEL)
	ID         []byte // "id" (CKA_ID)
	Type       string // "type": private, public, cert, secret-key, data
	ModulePath string // query "module-path"
	PINSource  PINSource
}

var uriTypes = map[string]bool{"private": true, "public": true, "cert": true, "secret-key": true, "data": true}

// ParseURI parses a "pkcs11:" URI. A pin-value attribute is refused: PINs come from a
// pin-source (a file or env:NAME), never from text that lands in configs and logs.
func ParseURI(s string) (URI, error) {
	var u URI
	rest, ok := strings.CutPrefix(s, "pkcs11:")
	if !ok {
		return u, fmt.Errorf("hsm: URI must start with \"pkcs11:\": %w", ErrBadRequest)
	}
	if len(s) > maxURILen {
		return u, fmt.Errorf("hsm: URI longer than %d bytes: %w", maxURILen, ErrBadRequest)
	}
	path, query, _ := strings.Cut(rest, "?")
	seen := map[string]bool{}
	if path != "" {
		for _, attr := range strings.Split(path, ";") {
			k, v, err := splitAttr(attr)
			if err != nil {
				return URI{}, err
			}
			if seen[k] {
				return URI{}, fmt.Errorf("hsm: URI attribute %q repeated: %w", k, ErrBadRequest)
			}
			seen[k] = true
			switch k {
			case "token":
				u.Token = string(v)
			case "serial":
				u.Serial = string(v)
			case "object":
				u.Object = string(v)
			case "id":
				u.ID = v
			case "type":
				if !uriTypes[string(v)] {
					return URI{}, fmt.Errorf("hsm: URI type %q unknown: %w", v, ErrBadRequest)
				}
				u.Type = string(v)
			case "slot-id":
				n, err := strconv.ParseUint(string(v), 10, 32)
				if err != nil {
					return URI{}, fmt.Errorf("hsm: URI slot-id %q: %w", v, ErrBadRequest)
				}
				id := uint(n)
				u.SlotID = &id
			case "manufacturer", "model", "library-manufacturer", "library-description", "library-version", "slot-description", "slot-manufacturer":
				// Accepted and ignored: they narrow a search we do by label, serial or slot.
			default:
				if !strings.HasPrefix(k, "x-") {
					return URI{}, fmt.Errorf("hsm: URI attribute %q unknown: %w", k, ErrBadRequest)
				}
			}
		}
	}
	if query != "" {
		for _, attr := range strings.Split(query, "&") {
			k, v, err := splitAttr(attr)
			if err != nil {
				return URI{}, err
			}
			switch k {
			case "module-path":
				u.ModulePath = string(v)
			case "pin-source":
				u.PINSource = PINSource(v)
			case "pin-value":
				return URI{}, fmt.Errorf("hsm: URI pin-value is refused, use pin-source=file:/path or env:NAME: %w", ErrBadRequest)
			case "module-name":
				return URI{}, fmt.Errorf("hsm: URI module-name is not supported, use module-path: %w", ErrBadRequest)
			default:
				if !strings.HasPrefix(k, "x-") {
					return URI{}, fmt.Errorf("hsm: URI query attribute %q unknown: %w", k, ErrBadRequest)
				}
			}
		}
	}
	return u, nil
}

// Bounds on decoded attribute values. They keep every URI that String can write
// (each byte percent-encoded at worst, three times its size) under maxURILen, so
// whatever parses also parses again after formatting.
const (
	maxValueLen = 256  // labels, serials, ids
	maxPathLen  = 1024 // module-path, pin-source
	maxURILen   = 16384
)

func splitAttr(attr string) (string, []byte, error) {
	k, v, ok := strings.Cut(attr, "=")
	if !ok || k == "" {
		return "", nil, fmt.Errorf("hsm: URI attribute %q is not name=value: %w", truncate(attr), ErrBadRequest)
	}
	k = strings.ToLower(k)
	val, err := pctDecode(v)
	if err != nil {
		return "", nil, fmt.Errorf("hsm: URI attribute %q: %w", truncate(k), err)
	}
	limit := maxValueLen
	if k == "module-path" || k == "pin-source" {
		limit = maxPathLen
	}
	if len(val) > limit {
		return "", nil, fmt.Errorf("hsm: URI attribute %q longer than %d bytes: %w", truncate(k), limit, ErrBadRequest)
	}
	return k, val, nil
}

// truncate keeps error messages about hostile input short.
func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

func pctDecode(s string) ([]byte, error) {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '%' {
			out = append(out, c)
			continue
		}
		if i+2 >= len(s) {
			return nil, fmt.Errorf("truncated percent-encoding: %w", ErrBadRequest)
		}
		n, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
		if err != nil {
			return nil, fmt.Errorf("bad percent-encoding %q: %w", s[i:i+3], ErrBadRequest)
		}
		out = append(out, byte(n))
		i += 2
	}
	return out, nil
}

// Characters RFC 7512 lets stand unescaped besides the unreserved set, in a path
// attribute value and in a query attribute value.
const (
	pathAvail  = ":[]@!$'()*+,"
	queryAvail = ":[]@!$'()*+,/?"
)

// pctEncode escapes everything outside RFC 7512's unreserved set and avail; with
// all=true it escapes every byte (binary values such as CKA_ID).
func pctEncode(b []byte, all bool, avail string) string {
	var sb strings.Builder
	for _, c := range b {
		if !all && (c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-._~"+avail, c) >= 0) {
			sb.WriteByte(c)
			continue
		}
		fmt.Fprintf(&sb, "%%%02X", c)
	}
	return sb.String()
}

// String formats the URI; query attributes are written only when set, and never a PIN.
func (u URI) String() string {
	var parts []string
	if u.Token != "" {
		parts = append(parts, "token="+pctEncode([]byte(u.Token), false, pathAvail))
	}
	if u.Serial != "" {
		parts = append(parts, "serial="+pctEncode([]byte(u.Serial), false, pathAvail))
	}
	if u.SlotID != nil {
		parts = append(parts, "slot-id="+strconv.FormatUint(uint64(*u.SlotID), 10))
	}
	if u.Object != "" {
		parts = append(parts, "object="+pctEncode([]byte(u.Object), false, pathAvail))
	}
	if len(u.ID) > 0 {
		parts = append(parts, "id="+pctEncode(u.ID, true, ""))
	}
	if u.Type != "" {
		parts = append(parts, "type="+u.Type)
	}
	s := "pkcs11:" + strings.Join(parts, ";")
	var q []string
	if u.ModulePath != "" {
		q = append(q, "module-path="+pctEncode([]byte(u.ModulePath), false, queryAvail))
	}
	if u.PINSource != "" {
		q = append(q, "pin-source="+pctEncode([]byte(u.PINSource), false, queryAvail))
	}
	if len(q) > 0 {
		s += "?" + strings.Join(q, "&")
	}
	return s
}
