// Package astm implements the ASTM E1381 (CLSI LIS01) link layer and reads
// ASTM E1394 (CLSI LIS2) records.
//
// The link layer is two state machines sharing the framing helpers:
//
//   - the receiver ([ReceiverState], driven over a connection by
//     [Receiver.Serve]) answers ENQ, checks and acknowledges frames and turns
//     one ENQ…EOT transmission into one [Session] whose body matches what the
//     reference agent's mode=astm delivers;
//   - the sender ([Sender]) plays the instrument: it bids for the line, sends
//     frames one at a time, retransmits on NAK and gives up with typed errors
//     ([ErrNAKLimit], [ErrTimeout], [ErrBusy], [ErrContention]).
//
// [ParseRecords] splits record text and decodes fields on access, using the
// delimiters declared by each H record. [ParseMnemonic], [FormatMnemonic] and
// [ParseScript] handle the "<STX>" notation and the scripted conversations
// used by acceptance tests and the replay tool.
//
// Nothing here logs or exits; problems are returned or reported through the
// callbacks in the options.
package astm
