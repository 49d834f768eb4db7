package portal

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"
)

const (
	sessionCookie = "edgeanchor_portal"
	sessionTTL    = 8 * time.Hour
	maxSessions   = 10000
)

// session is one browser's session: anonymous until a login when accounts
// are configured. Its CSRF token goes in every form.
type session struct {
	id      string
	csrf    string
	user    string
	expires time.Time
}

type sessions struct {
	mu sync.Mutex
	m  map[string]*session
}

func newSessions() *sessions { return &sessions{m: map[string]*session{}} }

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return hex.EncodeToString(b)
}

func (ss *sessions) get(id string) *session {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	s := ss.m[id]
	if s == nil || time.Now().After(s.expires) {
		delete(ss.m, id)
		return nil
	}
	return s
}

func (ss *sessions) create(user string) *session {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if len(ss.m) >= maxSessions {
		now := time.Now()
		for id, s := range ss.m {
			if now.After(s.expires) || s.user == "" {
				delete(ss.m, id)
			}
		}
	}
	s := &session{id: randomHex(32), csrf: randomHex(32), user: user, expires: time.Now().Add(sessionTTL)}
	ss.m[s.id] = s
	return s
}

func (ss *sessions) drop(id string) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	delete(ss.m, id)
}

type ctxKey struct{}

func sessionOf(r *http.Request) *session {
	s, _ := r.Context().Value(ctxKey{}).(*session)
	return s
}

// cookieName is the session cookie's name: with TLS it has the __Host-
// prefix, which browsers only accept Secure, for the whole site and from
// this host alone.
func (s *Server) cookieName() string {
	if s.cfg.TLSCert != "" {
		return "__Host-" + sessionCookie
	}
	return sessionCookie
}

func (s *Server) setCookie(w http.ResponseWriter, sess *session) {
	http.SetCookie(w, &http.Cookie{Name: s.cookieName(), Value: sess.id, Path: "/", HttpOnly: true,
		Secure: s.cfg.TLSCert != "", SameSite: http.SameSiteStrictMode, MaxAge: int(sessionTTL / time.Second)})
}

// session finds the request's session. Cookies do not name a port: a
// browser may send the cookie of another portal on the same host too.
func (s *Server) session(r *http.Request) *session {
	for _, c := range r.CookiesNamed(s.cookieName()) {
		if sess := s.sessions.get(c.Value); sess != nil {
			return sess
		}
	}
	return nil
}

// secure gives every request a session, asks for a login where accounts
// are configured, checks the CSRF token of every POST and sets the
// headers that keep the pages to the portal's own origin.
func (s *Server) secure(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		if s.cfg.TLSCert != "" {
			h.Set("Strict-Transport-Security", "max-age=31536000")
		}
		if strings.HasPrefix(r.URL.Path, "/static/") {
			next.ServeHTTP(w, r)
			return
		}
		sess := s.session(r)
		if sess == nil {
			sess = s.sessions.create("")
			s.setCookie(w, sess)
		}
		r = r.WithContext(context.WithValue(r.Context(), ctxKey{}, sess))
		if r.Method == http.MethodPost {
			if err := r.ParseMultipartForm(maxUpload); err != nil && err != http.ErrNotMultipart {
				http.Error(w, "form: "+err.Error(), http.StatusBadRequest)
				return
			}
			if subtle.ConstantTimeCompare([]byte(r.PostFormValue("csrf")), []byte(sess.csrf)) != 1 {
				http.Error(w, "the form's CSRF token is missing or stale: reload the page and submit again", http.StatusForbidden)
				return
			}
		}
		if s.accounts != nil && sess.user == "" && r.URL.Path != "/login" {
			http.Redirect(w, r, "/login", http.StatusSeeOther)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (s *Server) loginPage(w http.ResponseWriter, r *http.Request) {
	if s.accounts == nil {
		http.Redirect(w, r, "/consortium", http.StatusSeeOther)
		return
	}
	s.render(w, r, "login", page{Title: "Sign in"})
}

func (s *Server) loginPost(w http.ResponseWriter, r *http.Request) {
	if s.accounts == nil {
		http.Redirect(w, r, "/consortium", http.StatusSeeOther)
		return
	}
	user, pass := r.PostFormValue("user"), r.PostFormValue("password")
	host, _, _ := net.SplitHostPort(r.RemoteAddr)
	if wait := s.logins.blocked(user, host); wait > 0 {
		w.WriteHeader(http.StatusTooManyRequests)
		s.render(w, r, "login", page{Title: "Sign in", Err: fmt.Sprintf("Too many failed sign-ins: try again in %s.", wait.Round(time.Second)+time.Second)})
		return
	}
	hash, ok := s.accounts[user]
	if !ok {
		hash = dummyHash // same work whether or not the user exists
	}
	if bcrypt.CompareHashAndPassword(hash, []byte(pass)) != nil || !ok {
		s.logins.failed(user, host)
		s.log.Warn("portal login refused", "user", user, "remote", host)
		w.WriteHeader(http.StatusUnauthorized)
		s.render(w, r, "login", page{Title: "Sign in", Err: "Wrong user name or password."})
		return
	}
	s.logins.succeeded(user, host)
	if old := sessionOf(r); old != nil {
		s.sessions.drop(old.id)
	}
	sess := s.sessions.create(user)
	s.setCookie(w, sess)
	s.log.Info("portal login", "user", user, "remote", host)
	http.Redirect(w, r, "/consortium", http.StatusSeeOther)
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	if sess := sessionOf(r); sess != nil {
		s.sessions.drop(sess.id)
	}
	http.SetCookie(w, &http.Cookie{Name: s.cookieName(), Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: s.cfg.TLSCert != "", SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

// dummyHash is compared against for an unknown user.
var dummyHash, _ = bcrypt.GenerateFromPassword([]byte("no such user"), bcrypt.DefaultCost)

// loginLimiter slows repeated failed logins of a user name and of an
// address: after n failures further attempts are refused for backoff,
// doubling with each further failure.
type loginLimiter struct {
	n       int
	backoff time.Duration
	mu      sync.Mutex
	m       map[string]*failures
}

type failures struct {
	count int
	until time.Time
}

func newLoginLimiter(n int, backoff time.Duration) *loginLimiter {
	return &loginLimiter{n: n, backoff: backoff, m: map[string]*failures{}}
}

func (l *loginLimiter) keys(user, host string) []string { return []string{"u:" + user, "a:" + host} }

func (l *loginLimiter) blocked(user, host string) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	var wait time.Duration
	for _, k := range l.keys(user, host) {
		if f := l.m[k]; f != nil {
			wait = max(wait, time.Until(f.until))
		}
	}
	return wait
}

func (l *loginLimiter) failed(user, host string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.m) > 100000 {
		clear(l.m)
	}
	for _, k := range l.keys(user, host) {
		f := l.m[k]
		if f == nil {
			f = &failures{}
			l.m[k] = f
		}
		f.count++
		if f.count >= l.n {
			f.until = time.Now().Add(l.backoff << min(f.count-l.n, 6))
		}
	}
}

func (l *loginLimiter) succeeded(user, host string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, k := range l.keys(user, host) {
		delete(l.m, k)
	}
}
