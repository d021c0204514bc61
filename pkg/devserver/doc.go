// Package devserver is an embedded, in-memory Medplum-compatible server for
// local work and CI. It implements the server side of the agent protocol:
//
//   - POST /oauth2/token: the client-credentials grant, checked against the
//     ClientApplication resources (id = client id, secret = client secret).
//     Tokens are JWT-shaped (readable exp, iat, client_id, login_id claims)
//     but valid only because the server remembers issuing them; they expire
//     after Options.TokenTTL.
//   - /fhir/R4/: read, create, update, delete and search of Agent, Endpoint,
//     Bot, Device, Binary, AuditEvent, ClientApplication and AsyncJob, with a
//     bearer token. Search parameters: _id, _count, _offset, name
//     (case-insensitive prefix), identifier ([system|]value), status, url and
//     entity (an AuditEvent's entity reference). A Binary posted with any
//     content type other than application/fhir+json is stored as raw bytes;
//     reading it answers those bytes unless Accept asks for
//     application/fhir+json.
//   - /ws/agent: the agent WebSocket. The token is checked on connect and
//     again on every agent:transmit:request, whose channel's Bot then runs.
//   - The Agent operations $push, $reload-config, $upgrade, $fetch-logs,
//     $stats, $status and $bulk-status, at instance level
//     (Agent/{id}/$op) and type level (Agent/$op?<search>; $push and $status
//     select one agent by ?identifier=, the others run on every match, at
//     most 100, and answer a collection Bundle of Parameters{agent, result}).
//     $push also accepts "Prefer: respond-async" and then answers 202 with a
//     Content-Location of job/{id}/status, which answers 202 while the job
//     runs and 200 with the completed AsyncJob, whose output is
//     Parameters{outcome, responseBody}.
//
// Everything lives in memory and is lost on Close. AuditEvents and
// AsyncJobs keep the newest 10 000 of each.
//
// # Bots
//
// A Bot's behaviour is its kind, carried as an identifier with system
// BotKindSystem ("urn:medplum-agent:dev-server:bot-kind"):
//
//   - ack: HL7 v2 content is answered with an AA acknowledgement;
//     application/octet-stream with the ACK byte (body "06"); other content
//     types with an empty 200 answer.
//   - reject: HL7 v2 content is answered with an AE acknowledgement;
//     application/octet-stream with the NAK byte (body "15"); other content
//     types with a 400 failure.
//   - echo: the message body, unchanged.
//   - exec:COMMAND: COMMAND runs through "sh -c" ("cmd /C" on Windows) with
//     the body on stdin and MEDPLUM_AGENT_ID, MEDPLUM_CHANNEL,
//     MEDPLUM_REMOTE and MEDPLUM_CONTENT_TYPE in its environment; its stdout
//     is the answer. A non-zero exit, or more than 30 s, is a failure
//     carrying stderr. Empty stdout answers "Bot execution logs:\n" and
//     stderr, as Medplum does for a Bot that returns nothing.
//
// A successful answer has statusCode 200 and the request's contentType; a
// failure has statusCode 400, contentType application/json and an
// OperationOutcome as body. Every execution stores an AuditEvent whose
// entities are the Agent and the Bot and whose outcome is "0" (success) or
// "4" (failure).
//
// # Defaults
//
// Without a config file the server has client DefaultClientID
// ("medplum-agent-dev") with secret DefaultClientSecret
// ("medplum-agent-dev-secret"), Bots "ack", "echo" and "reject", and the
// Agent DefaultAgentID ("7d3c5f2e-9a41-4b8e-b6c2-1f0e8d4a5c93") with channel
// "hl7" on mllp://0.0.0.0:56000 answered by Bot "ack" (Endpoint id
// "<agent id>-hl7"). Its channel DefaultDICOMChannel ("dicom") on
// dicom://0.0.0.0:56104 goes to "ack" too: each stored instance arrives as
// a Binary upload (application/dicom, kept as is) followed by an
// application/json transmit that references it.
//
// # Config file
//
// A JSON file replaces the defaults. Unknown fields are errors; every
// problem is reported with its location. Example (also in
// testdata/devserver-example.json):
//
//	{
//	  "clients": [
//	    {"clientId": "ci-client", "clientSecret": "ci-secret"}
//	  ],
//	  "bots": [
//	    {"id": "ack", "name": "Acknowledge", "kind": "ack"},
//	    {"id": "lab-reject", "kind": "reject"},
//	    {"id": "upper", "name": "Upper-case echo", "kind": "exec:tr a-z A-Z"}
//	  ],
//	  "agents": [
//	    {
//	      "id": "3f0c6a8e-1b2d-4c5e-8f90-a1b2c3d4e5f6",
//	      "name": "lab-agent",
//	      "status": "active",
//	      "settings": [
//	        {"name": "keepAlive", "valueBoolean": true},
//	        {"name": "logStatsFreqSecs", "valueInteger": 60}
//	      ],
//	      "channels": [
//	        {"name": "adt", "address": "mllp://0.0.0.0:56000", "bot": "ack"},
//	        {"name": "lab", "address": "mllp://0.0.0.0:56001?enhanced=true", "bot": "lab-reject"},
//	        {"name": "raw", "address": "tcp://0.0.0.0:56002?startChar=%02&endChar=%03", "bot": "upper",
//	         "endpointId": "raw-endpoint"},
//	        {"name": "old", "address": "mllp://0.0.0.0:56003", "bot": "ack", "status": "off"}
//	      ]
//	    }
//	  ],
//	  "devices": [
//	    {"id": "lis", "name": "Lab system", "url": "mllp://127.0.0.1:2575"}
//	  ]
//	}
//
// Fields:
//
//   - clients (at least one): clientId (a FHIR id) and clientSecret. The
//     first client is the one the start-up banner shows.
//   - bots: id (a FHIR id), optional name, kind (ack, echo, reject or
//     exec:COMMAND).
//   - agents (at least one): id (a FHIR id, usually a UUID), optional name,
//     status (active, the default, off or error), settings (Agent.setting
//     entries: name plus exactly one of valueBoolean, valueInteger,
//     valueDecimal, valueString) and channels. The first agent is the one
//     the banner's run command uses.
//   - channels: name (unique within the agent), address (the Endpoint
//     address, e.g. mllp://0.0.0.0:56000), bot (a bot id), status (an
//     Endpoint status; active by default, off disables the channel) and
//     endpointId (default "<agent id>-<channel name>").
//   - devices: id, optional name, url (the remote a $push with destination
//     Device/<id> is sent to).
//
// # Recording
//
// Options.Record receives one JSON object per line for every accepted
// agent:transmit:request (after the token and channel checks), with fields
// time, agentId, channel, remote, contentType, body and callback.
//
// # Choices where Medplum was not followed or is unknown
//
// A connect naming an unknown agent answers agent:error "Not found". A
// transmit whose Bot cannot be read is answered like a failed Bot (400) so
// that the agent can correlate it. An operation that gets no answer in time
// answers 504 with an OperationOutcome of code timeout.
package devserver
