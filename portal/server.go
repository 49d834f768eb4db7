package portal

import (
	"context"
	"crypto/tls"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	rpchttp "github.com/cometbft/cometbft/rpc/client/http"

	"github.com/edgeanchor/edgeanchor/anchor/evidence"
	"github.com/edgeanchor/edgeanchor/anchor/ledgerclient"
	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/internal/safetext"
)

//go:embed web
var webFS embed.FS

// Server is the portal.
type Server struct {
	cfg      Config
	log      *slog.Logger
	trust    *evidence.Trust
	ledger   *ledgerclient.Client
	cometRPC *rpchttp.HTTP
	cometErr error
	accounts map[string][]byte
	gateways map[device.DID]string
	pages    map[string]*template.Template
	mux      *http.ServeMux
	http     *http.Client

	sessions *sessions
	logins   *loginLimiter
	audits   *auditRuns
	wageRuns *wageRuns

	// ctx is cancelled by Close: it ends the audits running in the
	// background.
	ctx    context.Context
	cancel context.CancelFunc

	mu       sync.Mutex
	listener net.Listener
}

// Deps are the portal's dependencies.
type Deps struct {
	Logger *slog.Logger
}

// New checks cfg, reads the trust file (and the accounts) and connects to
// the ledger's RPC (lazily: a node that is down shows on the pages).
func New(cfg Config, deps Deps) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	trust, err := evidence.ReadTrustFile(cfg.TrustPath)
	if err != nil {
		return nil, fmt.Errorf("portal: trust: %w", err)
	}
	s := &Server{cfg: cfg, log: log, trust: trust, gateways: map[device.DID]string{},
		http: &http.Client{Timeout: 30 * time.Second}, sessions: newSessions(),
		logins: newLoginLimiter(cfg.LoginFailures, cfg.LoginBackoff), audits: newAudits()}
	s.wageRuns = newWageRuns()
	if cfg.AccountsPath != "" {
		if s.accounts, err = ReadAccounts(cfg.AccountsPath); err != nil {
			return nil, err
		}
	}
	for _, g := range cfg.Gateways {
		s.gateways[g.DID] = strings.TrimRight(g.URL, "/")
	}
	if s.ledger, err = ledgerclient.NewClient(cfg.LedgerRPC, ledgerclient.ClientOptions{Retries: 1}); err != nil {
		return nil, fmt.Errorf("portal: ledger: %w", err)
	}
	s.cometRPC, s.cometErr = rpchttp.New(cfg.LedgerRPC, "/websocket")
	if err := s.parseTemplates(); err != nil {
		s.ledger.Close()
		return nil, err
	}
	s.routes()
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

// Close stops the audits running in the background, waits for them and
// releases the ledger client.
func (s *Server) Close() error {
	s.cancel()
	s.audits.Wait()
	s.wageRuns.Wait()
	return s.ledger.Close()
}

// baseCtx is the context of work that outlives a request.
func (s *Server) baseCtx(*http.Request) context.Context { return s.ctx }

var funcs = template.FuncMap{
	// text escapes control characters of untrusted text; html/template
	// then escapes the HTML.
	"text": func(v any) string { return safetext.Escape(fmt.Sprint(v)) },
	"short": func(v any) string {
		t := safetext.Escape(fmt.Sprint(v))
		if len(t) > 16 {
			return t[:16] + "…"
		}
		return t
	},
	"ago": func(t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return time.Since(t).Round(time.Second).String()
	},
	"utc": func(t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return t.UTC().Format(time.RFC3339)
	},
	"mark": func(ok bool) string {
		if ok {
			return "✓"
		}
		return "✗"
	},
}

func (s *Server) parseTemplates() error {
	s.pages = map[string]*template.Template{}
	names, err := fs.Glob(webFS, "web/*.html")
	if err != nil {
		return err
	}
	for _, n := range names {
		if strings.HasSuffix(n, "/layout.html") {
			continue
		}
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(webFS, "web/layout.html", n)
		if err != nil {
			return fmt.Errorf("portal: template %s: %w", n, err)
		}
		s.pages[strings.TrimSuffix(strings.TrimPrefix(n, "web/"), ".html")] = t
	}
	return nil
}

// Handler is the portal's HTTP handler (the login check wraps every route
// but the login page and the static assets).
func (s *Server) Handler() http.Handler { return s.secure(s.mux) }

func (s *Server) routes() {
	m := http.NewServeMux()
	static, _ := fs.Sub(webFS, "web/static")
	m.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	m.HandleFunc("GET /login", s.loginPage)
	m.HandleFunc("POST /login", s.loginPost)
	m.HandleFunc("POST /logout", s.logout)
	m.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/consortium", http.StatusSeeOther)
	})
	m.HandleFunc("GET /consortium", s.consortiumPage)
	m.HandleFunc("GET /gateway", s.gatewayPage)
	m.HandleFunc("GET /batch", s.batchPage)
	m.HandleFunc("GET /proof", s.proofDownload)
	m.HandleFunc("GET /verify", s.verifyPage)
	m.HandleFunc("POST /verify", s.verifyPost)
	m.HandleFunc("GET /audit", s.auditPage)
	m.HandleFunc("POST /audit", s.auditPost)
	m.HandleFunc("GET /audit/{id}", s.auditRunPage)
	m.HandleFunc("GET /audit/{id}/status", s.auditStatus)
	m.HandleFunc("GET /audit/{id}/report.json", s.auditJSON)
	m.HandleFunc("GET /audit/{id}/report.csv", s.auditCSV)
	m.HandleFunc("GET /charts", s.chartsPage)
	m.HandleFunc("GET /wages", s.wagesPage)
	m.HandleFunc("POST /wages", s.wagesPost)
	m.HandleFunc("GET /wages/{id}", s.wageRunPage)
	m.HandleFunc("GET /wages/{id}/status", s.wageStatus)
	m.HandleFunc("GET /wages/{id}/report.json", s.wageJSON)
	m.HandleFunc("GET /wages/{id}/report.csv", s.wageCSV)
	m.HandleFunc("GET /wages/{id}/pack", s.wagePack)
	s.mux = m
}

// page is what every page template gets.
type page struct {
	Title   string
	Nav     string
	CSRF    string
	User    string
	Refresh int
	Err     string
	Data    any
}

func (s *Server) render(w http.ResponseWriter, r *http.Request, name string, p page) {
	t := s.pages[name]
	if t == nil {
		http.Error(w, "no such page", http.StatusInternalServerError)
		return
	}
	if sess := sessionOf(r); sess != nil {
		p.CSRF, p.User = sess.csrf, sess.user
	}
	var b strings.Builder
	if err := t.Execute(&b, p); err != nil {
		s.log.Error("portal page", "page", name, "error", err)
		http.Error(w, "page failed to render", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = w.Write([]byte(b.String()))
}

// Run serves on cfg.Listen until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("portal: listen %s: %w", s.cfg.Listen, err)
	}
	return s.Serve(ctx, ln)
}

// Addr is the address the portal listens on, once Serve has started.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.listener == nil {
		return ""
	}
	return s.listener.Addr().String()
}

// URL is the portal's base URL, once Serve has started.
func (s *Server) URL() string {
	scheme := "http"
	if s.cfg.TLSCert != "" {
		scheme = "https"
	}
	return scheme + "://" + s.Addr()
}

// Serve serves on ln until ctx ends.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if s.cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(s.cfg.TLSCert, s.cfg.TLSKey)
		if err != nil {
			ln.Close()
			return fmt.Errorf("portal: tls_cert/tls_key: %w", err)
		}
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	}
	s.mu.Lock()
	s.listener = ln
	s.mu.Unlock()
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second,
		BaseContext: func(net.Listener) context.Context { return ctx }}
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	err := srv.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		<-done
		return nil
	}
	return err
}
