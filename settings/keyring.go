package settings

import (
	"bufio"
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/moatsh/moat/errdefs"
)

// Keyring encrypts saved settings at rest (AES-256-GCM), so a copied database alone
// reveals no provider token. Its keys live in a file outside the database, mode 0600
// (MOAT_HOME/settings.key by default), one line per key, the last one current:
//
//	moat-settings-key v1 <id> <base64 key>
//
// The file is made with a fresh key on the first write. Older keys stay readable until
// Rotate has re-encrypted everything, so a crash during rotation loses nothing. Several
// moatd replicas on one store must share the file. A Keyring is safe for concurrent use.
type Keyring struct {
	path string

	mu   sync.Mutex
	keys map[string][]byte // id → key
	cur  string            // current key id; "" before the file exists
	read bool
}

// sealedPrefix starts every encrypted value; values without it are plaintext JSON from
// before encryption (read as they are, encrypted at their next write).
const sealedPrefix = "moatenc1:"

// NewKeyring returns the keyring kept in the file at path. It does no I/O until used.
func NewKeyring(path string) *Keyring { return &Keyring{path: path, keys: map[string][]byte{}} }

// Path is the key file's path.
func (k *Keyring) Path() string { return k.path }

// load reads the key file once; a missing file is an empty keyring. Call with k.mu held.
func (k *Keyring) load() error {
	if k.read {
		return nil
	}
	fi, err := os.Stat(k.path)
	if errors.Is(err, fs.ErrNotExist) {
		k.read = true
		return nil
	}
	if err != nil {
		return errdefs.Unavailablef("settings: key file: %v", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return errdefs.FailedPreconditionf("settings: key file %s is readable by others (mode %v); chmod 600 it", k.path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(k.path)
	if err != nil {
		return errdefs.Unavailablef("settings: key file: %v", err)
	}
	keys, cur, err := parseKeyFile(b)
	if err != nil {
		return errdefs.FailedPreconditionf("settings: key file %s: %v", k.path, err)
	}
	k.keys, k.cur, k.read = keys, cur, true
	return nil
}

func parseKeyFile(b []byte) (map[string][]byte, string, error) {
	keys := map[string][]byte{}
	cur := ""
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 4 || f[0] != "moat-settings-key" || f[1] != "v1" {
			return nil, "", fmt.Errorf("line %d: want \"moat-settings-key v1 ID KEY\"", n)
		}
		key, err := base64.StdEncoding.DecodeString(f[3])
		if err != nil || len(key) != 32 {
			return nil, "", fmt.Errorf("line %d: the key is not 32 bytes of base64", n)
		}
		keys[f[2]], cur = key, f[2]
	}
	if err := sc.Err(); err != nil {
		return nil, "", err
	}
	return keys, cur, nil
}

// write replaces the key file with keys, cur last, atomically. Call with k.mu held.
func (k *Keyring) write(keys map[string][]byte, cur string) error {
	var b strings.Builder
	b.WriteString("# moat settings encryption keys: keep this file secret and outside the database\n")
	for id, key := range keys {
		if id != cur {
			fmt.Fprintf(&b, "moat-settings-key v1 %s %s\n", id, base64.StdEncoding.EncodeToString(key))
		}
	}
	fmt.Fprintf(&b, "moat-settings-key v1 %s %s\n", cur, base64.StdEncoding.EncodeToString(keys[cur]))
	if err := os.MkdirAll(filepath.Dir(k.path), 0o700); err != nil {
		return errdefs.Unavailablef("settings: key file: %v", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(k.path), ".settings-key-*")
	if err != nil {
		return errdefs.Unavailablef("settings: key file: %v", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(b.String()); err != nil {
		tmp.Close()
		return errdefs.Unavailablef("settings: key file: %v", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return errdefs.Unavailablef("settings: key file: %v", err)
	}
	if err := tmp.Close(); err != nil {
		return errdefs.Unavailablef("settings: key file: %v", err)
	}
	if err := os.Rename(tmp.Name(), k.path); err != nil {
		return errdefs.Unavailablef("settings: key file: %v", err)
	}
	k.keys, k.cur = keys, cur
	return nil
}

func newKey() (string, []byte) {
	id := make([]byte, 4)
	key := make([]byte, 32)
	_, _ = rand.Read(id)
	_, _ = rand.Read(key)
	return hex.EncodeToString(id), key
}

// currentKey returns the current key, creating the key file when there is none.
func (k *Keyring) currentKey() (string, []byte, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.load(); err != nil {
		return "", nil, err
	}
	if k.cur == "" {
		id, key := newKey()
		if err := k.write(map[string][]byte{id: key}, id); err != nil {
			return "", nil, err
		}
	}
	return k.cur, k.keys[k.cur], nil
}

func gcm(key []byte) cipher.AEAD {
	block, err := aes.NewCipher(key)
	if err != nil {
		panic(err) // keys are always 32 bytes
	}
	a, err := cipher.NewGCM(block)
	if err != nil {
		panic(err)
	}
	return a
}

// seal encrypts plain for the store key name (bound as associated data, so a value cannot
// be moved to another backend's key).
func (k *Keyring) seal(name string, plain []byte) ([]byte, error) {
	id, key, err := k.currentKey()
	if err != nil {
		return nil, err
	}
	a := gcm(key)
	nonce := make([]byte, a.NonceSize())
	_, _ = rand.Read(nonce)
	ct := a.Seal(nonce, nonce, plain, []byte(name))
	return []byte(sealedPrefix + id + ":" + base64.StdEncoding.EncodeToString(ct)), nil
}

// open decrypts a stored value; plaintext from before encryption is returned as it is.
func (k *Keyring) open(name string, stored []byte) ([]byte, error) {
	rest, ok := bytes.CutPrefix(stored, []byte(sealedPrefix))
	if !ok {
		return stored, nil
	}
	id, b64, ok := bytes.Cut(rest, []byte(":"))
	if !ok {
		return nil, errdefs.FailedPreconditionf("settings: %s: malformed encrypted value", name)
	}
	k.mu.Lock()
	err := k.load()
	key := k.keys[string(id)]
	k.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if key == nil {
		return nil, errdefs.FailedPreconditionf("settings: %s is encrypted with key %s, which the key file %s does not hold", name, id, k.path)
	}
	ct, err := base64.StdEncoding.DecodeString(string(b64))
	a := gcm(key)
	if err != nil || len(ct) < a.NonceSize() {
		return nil, errdefs.FailedPreconditionf("settings: %s: malformed encrypted value", name)
	}
	plain, err := a.Open(nil, ct[:a.NonceSize()], ct[a.NonceSize():], []byte(name))
	if err != nil {
		return nil, errdefs.FailedPreconditionf("settings: %s: cannot decrypt with key %s (wrong key file?)", name, id)
	}
	return plain, nil
}

// beginRotation adds a new current key, keeping the old ones readable.
func (k *Keyring) beginRotation() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.load(); err != nil {
		return err
	}
	keys := map[string][]byte{}
	for id, key := range k.keys {
		keys[id] = key
	}
	id, key := newKey()
	keys[id] = key
	return k.write(keys, id)
}

// endRotation drops every key but the current one.
func (k *Keyring) endRotation() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.write(map[string][]byte{k.cur: k.keys[k.cur]}, k.cur)
}
