package devserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/medplum-agent/medplum-agent/pkg/fhir"
	"github.com/medplum-agent/medplum-agent/pkg/protocol"
)

// Defaults of Options.
const (
	DefaultTokenTTL          = time.Hour
	DefaultHeartbeatInterval = 10 * time.Second
	DefaultVersion           = "0.0.0-dev"
)

// maxConcurrentBots bounds Bot executions in flight across all sockets.
const maxConcurrentBots = 64

// Options configures a Server.
type Options struct {
	// Listen is the TCP address; DefaultListen when empty. ":0" picks a port.
	Listen string
	// Config is the initial data set; DefaultConfig() when nil.
	Config *Config
	// Record, when set, receives one JSON line per accepted
	// agent:transmit:request: {time, agentId, channel, remote, contentType,
	// body, callback}. Each line is written with a single Write call.
	Record io.Writer
	// Logger receives operational logs; nothing is logged when nil.
	Logger *slog.Logger
	// TokenTTL is the access-token lifetime; DefaultTokenTTL when zero.
	TokenTTL time.Duration
	// HeartbeatInterval is how often the server sends agent:heartbeat:request
	// to each connected agent; DefaultHeartbeatInterval when zero, never when
	// negative.
	HeartbeatInterval time.Duration
	// Version is reported in agent:heartbeat:response; DefaultVersion when empty.
	Version string
}

// Server is an embedded Medplum-compatible server: OAuth2 client
// credentials, a small FHIR R4 repository, the agent WebSocket with built-in
// Bots, and the Agent operations.
type Server struct {
	opt    Options
	log    *slog.Logger
	store  *store
	tokens *tokens
	rec    *recorder
	bots   chan struct{} // semaphore of running Bot executions

	// Typed forms of the resources every transmit reads.
	agents   decoded[fhir.Agent]
	botKinds decoded[botIdentifiers]

	ln      net.Listener
	http    *http.Server
	baseURL string

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // background work that Close waits for

	mu          sync.Mutex
	conns       map[*agentConn]struct{}
	byAgent     map[string]map[*agentConn]struct{}
	status      map[string]*agentStatus
	pending     map[string]chan *protocol.Message
	onTransmit  func(agentID string, m *protocol.Message)
	botOverride func(agentID string, m *protocol.Message) *protocol.Message
	closed      bool
}

// New validates the options and loads the config; it does not bind.
func New(opt Options) (*Server, error) {
	if opt.Listen == "" {
		opt.Listen = DefaultListen
	}
	if opt.Config == nil {
		opt.Config = DefaultConfig()
	}
	if err := opt.Config.Validate(); err != nil {
		return nil, err
	}
	if opt.TokenTTL == 0 {
		opt.TokenTTL = DefaultTokenTTL
	}
	if opt.TokenTTL < 0 {
		return nil, errors.New("devserver: negative TokenTTL")
	}
	if opt.HeartbeatInterval == 0 {
		opt.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if opt.Version == "" {
		opt.Version = DefaultVersion
	}
	log := opt.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		opt:     opt,
		log:     log,
		store:   newStore(maxKept),
		tokens:  newTokens(opt.TokenTTL),
		bots:    make(chan struct{}, maxConcurrentBots),
		conns:   map[*agentConn]struct{}{},
		byAgent: map[string]map[*agentConn]struct{}{},
		status:  map[string]*agentStatus{},
		pending: map[string]chan *protocol.Message{},
	}
	if opt.Record != nil {
		s.rec = &recorder{w: opt.Record}
	}
	for _, r := range opt.Config.resources() {
		if err := s.putValue(r); err != nil {
			return nil, fmt.Errorf("devserver: loading config: %w", err)
		}
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

// putValue stores a typed resource.
func (s *Server) putValue(v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return s.PutResource(raw)
}

// Start binds the listen address and serves in the background.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.ln != nil {
		return errors.New("devserver: already started or closed")
	}
	ln, err := net.Listen("tcp", s.opt.Listen)
	if err != nil {
		return fmt.Errorf("devserver: cannot listen on %s: %w", s.opt.Listen, err)
	}
	addr := ln.Addr().(*net.TCPAddr)
	host := addr.IP.String()
	if addr.IP.IsUnspecified() {
		host = "127.0.0.1"
	}
	s.ln = ln
	s.baseURL = "http://" + net.JoinHostPort(host, fmt.Sprint(addr.Port)) + "/"
	s.http = &http.Server{
		Handler:           s.routes(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return s.ctx },
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("dev server stopped", "err", err)
		}
	}()
	if s.opt.HeartbeatInterval > 0 {
		s.wg.Add(1)
		go s.heartbeats()
	}
	s.log.Info("dev server listening", "baseUrl", s.baseURL)
	return nil
}

// BaseURL is the server root with a trailing slash, e.g.
// "http://127.0.0.1:8103/". Empty before Start.
func (s *Server) BaseURL() string { return s.baseURL }

// Close stops serving, disconnects every agent and waits for running Bots and
// asynchronous jobs to finish.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	var err error
	if s.http != nil {
		err = s.http.Close()
	}
	s.DisconnectAgents()
	s.wg.Wait()
	return err
}

// Banner prints what a user needs to connect an agent.
func (s *Server) Banner(w io.Writer) {
	c := s.opt.Config
	client := c.Clients[0]
	agent := c.Agents[0]
	var b strings.Builder
	fmt.Fprintf(&b, "Medplum dev server listening on %s\n\n", s.baseURL)
	fmt.Fprintf(&b, "  Base URL:       %s\n", s.baseURL)
	fmt.Fprintf(&b, "  FHIR base:      %sfhir/R4/\n", s.baseURL)
	fmt.Fprintf(&b, "  Client ID:      %s\n", client.ClientID)
	fmt.Fprintf(&b, "  Client secret:  %s\n", client.ClientSecret)
	for _, a := range c.Agents {
		fmt.Fprintf(&b, "  Agent ID:       %s", a.ID)
		if a.Name != "" {
			fmt.Fprintf(&b, " (%s)", a.Name)
		}
		b.WriteString("\n")
		for _, ch := range a.Channels {
			fmt.Fprintf(&b, "    channel %-10s %s -> Bot/%s\n", ch.Name, ch.Address, ch.Bot)
		}
	}
	fmt.Fprintf(&b, "\nRun an agent against it with:\n\n  medplum-agent run %s %s %s %s\n",
		shellQuote(s.baseURL), shellQuote(client.ClientID), shellQuote(client.ClientSecret), shellQuote(agent.ID))
	_, _ = io.WriteString(w, b.String())
}

// shellQuote quotes s for a POSIX shell when it has special characters.
func shellQuote(s string) string {
	safe := s != ""
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./:@%+=,", r)) {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /oauth2/token", s.handleToken)
	mux.HandleFunc("GET /ws/agent", s.handleWebSocket)
	mux.HandleFunc("GET /healthcheck", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, "application/json", map[string]any{"ok": true, "version": s.opt.Version})
	})
	mux.Handle("/fhir/R4/", s.authenticated(http.HandlerFunc(s.handleFHIR)))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeOutcome(w, http.StatusNotFound, notFound())
	})
	return mux
}

// authenticated requires a valid bearer token.
func (s *Server) authenticated(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.tokens.valid(bearer(r)) {
			oo := fhir.Outcome("error", "login", "Unauthorized")
			oo.ID = "unauthorized"
			writeOutcome(w, http.StatusUnauthorized, oo)
			return
		}
		h.ServeHTTP(w, r)
	})
}

const fhirJSON = "application/fhir+json; charset=utf-8"

func writeJSON(w http.ResponseWriter, status int, contentType string, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, contentType = http.StatusInternalServerError, fhirJSON
		b, _ = json.Marshal(fhir.Outcome("error", "exception", err.Error()))
	}
	w.Header().Set("Content-Type", contentType)
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func writeOutcome(w http.ResponseWriter, status int, oo *fhir.OperationOutcome) {
	writeJSON(w, status, fhirJSON, oo)
}

// The OperationOutcomes Medplum answers with.

func allOK() *fhir.OperationOutcome {
	oo := fhir.Outcome("information", "informational", "All OK")
	oo.ID = "allok"
	return oo
}

func notFound() *fhir.OperationOutcome {
	oo := fhir.Outcome("error", "not-found", "Not found")
	oo.ID = "not-found"
	return oo
}

func notSupported(text string) *fhir.OperationOutcome {
	return fhir.Outcome("error", "not-supported", text)
}

func badRequest(text string) *fhir.OperationOutcome {
	return fhir.Outcome("error", "invalid", text)
}
