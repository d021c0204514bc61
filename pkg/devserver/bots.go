package devserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/medplum-agent/medplum-agent/pkg/fhir"
	"github.com/medplum-agent/medplum-agent/pkg/hl7"
	"github.com/medplum-agent/medplum-agent/pkg/protocol"
)

// Limits of exec Bots.
const (
	execTimeout   = 30 * time.Second
	maxExecOutput = 16 << 20
)

// Byte-stream answers, hex-encoded as the agent expects them.
const (
	hexACK = "06"
	hexNAK = "15"
)

// runBot executes the Bot behind botRef ("Bot/<id>") for an inbound
// message, records an AuditEvent and returns the agent:transmit:response.
func (s *Server) runBot(agentID, botRef string, m *protocol.Message) *protocol.Message {
	start := time.Now()
	resp := &protocol.Message{
		Type:        protocol.TypeTransmitResponse,
		Channel:     m.Channel,
		Remote:      m.Remote,
		Callback:    m.Callback,
		ContentType: m.ContentType,
		StatusCode:  200,
	}
	botID, kind, err := s.botKind(botRef)
	if err == nil {
		resp.Body, err = s.execute(kind, agentID, m)
	}
	if err != nil {
		resp.StatusCode = 400
		resp.ContentType = protocol.ContentTypeJSON
		b, _ := json.Marshal(fhir.Outcome("error", "processing", err.Error()))
		resp.Body = string(b)
	}
	s.audit(agentID, botID, kind, resp, start, err)
	return resp
}

// botIdentifiers is the part of a Bot resource botKind reads.
type botIdentifiers struct {
	Identifier []fhir.Identifier `json:"identifier"`
}

// botKind reads the kind a Bot resource carries under BotKindSystem.
func (s *Server) botKind(ref string) (string, botKind, error) {
	id, ok := strings.CutPrefix(ref, "Bot/")
	if !ok || id == "" {
		return "", botKind{}, fmt.Errorf("Invalid bot reference %q", ref)
	}
	bot, err := s.botKinds.get(s.store, "Bot", id)
	if err != nil {
		return id, botKind{}, fmt.Errorf("Bot/%s: %w", id, err)
	}
	for _, ident := range bot.Identifier {
		if ident.System == BotKindSystem {
			k, err := parseBotKind(ident.Value)
			if err != nil {
				return id, botKind{}, fmt.Errorf("Bot/%s kind: %w", id, err)
			}
			return id, k, nil
		}
	}
	return id, botKind{}, fmt.Errorf("Bot/%s has no identifier with system %s", id, BotKindSystem)
}

// execute produces a Bot's answer body.
//
//   - ack: an HL7 AA acknowledgement; for application/octet-stream the ACK
//     byte (hex "06"); for other content types an empty body.
//   - reject: an HL7 AE acknowledgement; for application/octet-stream the NAK
//     byte (hex "15"); for other content types a failure.
//   - echo: the message body.
//   - exec: the command's stdout (body on stdin); a non-zero exit is a failure
//     carrying stderr.
func (s *Server) execute(k botKind, agentID string, m *protocol.Message) (string, error) {
	switch k.name {
	case "ack", "reject":
		code, byteAnswer := hl7.AA, hexACK
		if k.name == "reject" {
			code, byteAnswer = hl7.AE, hexNAK
		}
		switch m.ContentType {
		case protocol.ContentTypeHL7:
			msg, err := hl7.Parse(m.Body)
			if err != nil {
				return "", err
			}
			return hl7.BuildAck(msg, code, hl7.AckOptions{}).String(), nil
		case protocol.ContentTypeOctet:
			return byteAnswer, nil
		}
		if k.name == "reject" {
			return "", errors.New("Rejected by bot")
		}
		return "", nil
	case "echo":
		return m.Body, nil
	default:
		return s.execCommand(k.command, agentID, m)
	}
}

// execCommand runs an exec Bot's command through the system shell. A command
// that prints nothing answers like a Medplum Bot that returns nothing.
func (s *Server) execCommand(command, agentID string, m *protocol.Message) (string, error) {
	ctx, cancel := context.WithTimeout(s.ctx, execTimeout)
	defer cancel()
	var cmd *exec.Cmd
	if runtime.GOOS == "windows" {
		cmd = exec.CommandContext(ctx, "cmd", "/C", command)
	} else {
		cmd = exec.CommandContext(ctx, "sh", "-c", command)
	}
	cmd.Stdin = strings.NewReader(m.Body)
	cmd.Env = append(os.Environ(),
		"MEDPLUM_AGENT_ID="+agentID,
		"MEDPLUM_CHANNEL="+m.Channel,
		"MEDPLUM_REMOTE="+m.Remote,
		"MEDPLUM_CONTENT_TYPE="+m.ContentType,
	)
	var stdout, stderr cappedBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// Grandchildren holding the pipes open must not stall the Bot.
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	errText := strings.TrimSpace(stderr.String())
	switch {
	case ctx.Err() != nil:
		return "", fmt.Errorf("exec: %s: timed out or cancelled after %s", command, execTimeout)
	case err != nil && errText != "":
		return "", errors.New(errText)
	case err != nil:
		return "", fmt.Errorf("exec: %s: %w", command, err)
	case stdout.truncated:
		return "", fmt.Errorf("exec: %s: output larger than %d bytes", command, maxExecOutput)
	case stdout.Len() == 0:
		return "Bot execution logs:\n" + stderr.String(), nil
	}
	return stdout.String(), nil
}

// cappedBuffer keeps the first maxExecOutput bytes written to it and
// accepts the rest silently, so a chatty command is not killed by EPIPE.
type cappedBuffer struct {
	strings.Builder
	truncated bool
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	if room := maxExecOutput - b.Len(); len(p) > room {
		b.truncated = true
		b.Builder.Write(p[:room])
		return len(p), nil
	}
	return b.Builder.Write(p)
}

// auditEvent is the AuditEvent of one Bot execution, typed so that the one
// written per message is a single json.Marshal.
type auditEvent struct {
	ResourceType string        `json:"resourceType"`
	ID           string        `json:"id"`
	Meta         fhir.Meta     `json:"meta"`
	Type         auditCoding   `json:"type"`
	Subtype      []auditCoding `json:"subtype"`
	Action       string        `json:"action"`
	Recorded     string        `json:"recorded"`
	Period       auditPeriod   `json:"period"`
	Outcome      string        `json:"outcome"`
	OutcomeDesc  string        `json:"outcomeDesc"`
	Agent        []auditAgent  `json:"agent"`
	Source       auditSource   `json:"source"`
	Entity       []auditWhat   `json:"entity"`
}

type auditCoding struct {
	System  string `json:"system"`
	Code    string `json:"code"`
	Display string `json:"display"`
}

type auditPeriod struct {
	Start string `json:"start"`
	End   string `json:"end"`
}

type auditAgent struct {
	Who       fhir.Reference `json:"who"`
	Requestor bool           `json:"requestor"`
}

type auditSource struct {
	Observer fhir.Reference `json:"observer"`
}

type auditWhat struct {
	What fhir.Reference `json:"what"`
}

// audit stores the AuditEvent of one Bot execution.
func (s *Server) audit(agentID, botID string, k botKind, resp *protocol.Message, start time.Time, err error) {
	outcome, desc := "0", k.name+": "+strconv.Itoa(resp.StatusCode)
	if err != nil {
		outcome, desc = "4", fmt.Sprintf("%s: %v", k.name, err)
	}
	agentRef, botRef := fhir.Reference{Reference: "Agent/" + agentID}, fhir.Reference{Reference: "Bot/" + botID}
	_, perr := s.store.putNew("AuditEvent", func(id string, meta fhir.Meta) ([]byte, error) {
		return json.Marshal(auditEvent{
			ResourceType: "AuditEvent", ID: id, Meta: meta,
			Type:     auditCoding{"http://terminology.hl7.org/CodeSystem/audit-event-type", "rest", "RESTful Operation"},
			Subtype:  []auditCoding{{"http://hl7.org/fhir/restful-interaction", "execute", "execute"}},
			Action:   "E",
			Recorded: meta.LastUpdated,
			Period:   auditPeriod{Start: start.UTC().Format(time.RFC3339Nano), End: time.Now().UTC().Format(time.RFC3339Nano)},
			Outcome:  outcome, OutcomeDesc: desc,
			Agent:  []auditAgent{{Who: botRef}},
			Source: auditSource{Observer: agentRef},
			Entity: []auditWhat{{What: agentRef}, {What: botRef}},
		})
	})
	if perr != nil {
		s.log.Error("cannot store AuditEvent", "err", perr)
	}
}

// create stores a new server-generated resource and returns its id.
func (s *Server) create(v any) (string, error) {
	raw, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	res, err := decodeResource(raw)
	if err != nil {
		return "", err
	}
	e, _, err := s.store.put(res, nil)
	if err != nil {
		return "", err
	}
	return str(e.resource()["id"]), nil
}
