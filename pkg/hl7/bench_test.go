package hl7

import (
	"testing"
	"time"
)

// The ORU^R01 fixture is about 1.2 KB with 14 segments, a typical lab result.
func loadORU(b *testing.B) string {
	text, _ := readMessage(b, "oru_r01.hl7")
	return text
}

func BenchmarkParse(b *testing.B) {
	text := loadORU(b)
	b.SetBytes(int64(len(text)))
	b.ReportAllocs()
	for b.Loop() {
		m, err := Parse(text)
		if err != nil || m.ControlID() == "" {
			b.Fatal(err)
		}
	}
}

func BenchmarkString(b *testing.B) {
	_, m := readMessage(b, "oru_r01.hl7")
	modified := m.Clone()
	if err := modified.Set("PID-5.2", "SEAN"); err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name string
		m    *Message
	}{{"untouched", m}, {"modified", modified}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if bc.m.String() == "" {
					b.Fatal("empty")
				}
			}
		})
	}
}

func BenchmarkBuildAck(b *testing.B) {
	_, m := readMessage(b, "oru_r01.hl7")
	now := time.Date(2024, 3, 15, 9, 15, 0, 0, time.UTC)
	b.ReportAllocs()
	for b.Loop() {
		if BuildAck(m, AA, AckOptions{Now: now}).String() == "" {
			b.Fatal("empty")
		}
	}
}

func BenchmarkGet(b *testing.B) {
	_, m := readMessage(b, "oru_r01.hl7")
	for _, path := range []string{"MSH-10", "PID-3.1", "OBX(7)-5", "OBX(9)-5"} {
		b.Run(path, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = m.Get(path)
			}
		})
	}
}
