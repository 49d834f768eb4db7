package device

import (
	"errors"
	"strings"
	"testing"
)

// TestPersonRef pins the reference to SM3(salt ‖ id):
//
//	printf 'site-a salt110101199003074514' | openssl dgst -sm3 -r
func TestPersonRef(t *testing.T) {
	const want = "d104285285ba500d67e10731a4bfd08d5720c6fa645af1d71862a5796e4e54e2"
	if got := PersonRef([]byte("site-a salt"), "110101199003074514"); got != want {
		t.Fatalf("PersonRef = %s, want %s", got, want)
	}
	if PersonRef([]byte("site-b salt"), "110101199003074514") == want {
		t.Fatal("the salt does not change the reference")
	}
}

func TestPersonalData(t *testing.T) {
	for kind, want := range map[string]bool{KindAttendance: true, KindWage: true, KindSurvey: false, KindDust: false} {
		if PersonalData(kind) != want {
			t.Errorf("PersonalData(%s) = %v", kind, !want)
		}
	}
}

func TestValidateData(t *testing.T) {
	d := goldenData()
	with := func(kind, old, new string) string {
		if !strings.Contains(d[kind], old) {
			t.Fatalf("%s data has no %q", kind, old)
		}
		return strings.Replace(d[kind], old, new, 1)
	}
	tests := []struct {
		name, kind, data string
		field            string // "" with ok=false: the error names no field
		ok               bool
	}{
		{"attendance", KindAttendance, d[KindAttendance], "", true},
		{"wage", KindWage, d[KindWage], "", true},
		{"survey", KindSurvey, d[KindSurvey], "", true},
		{"dust", KindDust, d[KindDust], "", true},
		{"dust with spaces", KindDust, `{ "pm25_ugm3" : 0, "pm10_ugm3" : 2000, "noise_dba" : 20 }`, "", true},
		{"dust exponent", KindDust, `{"pm25_ugm3":3.52e1,"pm10_ugm3":71,"noise_dba":62.5}`, "", true},

		{"unknown kind", "payroll.bonus", d[KindWage], "", false},
		{"empty kind", "", d[KindDust], "", false},
		{"data array", KindDust, `[]`, "", false},
		{"data null", KindDust, `null`, "", false},
		{"data string", KindDust, `"x"`, "", false},
		{"trailing data", KindDust, d[KindDust] + `{}`, "", false},
		{"duplicate field", KindDust, `{"pm25_ugm3":1,"pm10_ugm3":71,"noise_dba":62.5,"pm25_ugm3":2}`, "", false},
		{"NaN literal", KindDust, `{"pm25_ugm3":NaN,"pm10_ugm3":71,"noise_dba":62.5}`, "", false},
		{"invalid UTF-8", KindAttendance, with(KindAttendance, "north-2", "north-\xff"), "", false},

		{"missing", KindDust, `{"pm25_ugm3":35.2,"pm10_ugm3":71}`, "noise_dba", false},
		{"unknown field", KindDust, `{"pm25_ugm3":35.2,"pm10_ugm3":71,"noise_dba":62.5,"x":1}`, "x", false},
		{"number as string", KindDust, with(KindDust, "35.2", `"35.2"`), "pm25_ugm3", false},
		{"number null", KindDust, with(KindDust, "35.2", `null`), "pm25_ugm3", false},
		{"infinite", KindDust, with(KindDust, "35.2", "1e400"), "pm25_ugm3", false},
		{"negative", KindDust, with(KindDust, "35.2", "-0.1"), "pm25_ugm3", false},
		{"noise below 20", KindDust, with(KindDust, "62.5", "19.9"), "noise_dba", false},
		{"pm10 above 2000", KindDust, with(KindDust, "71", "2000.01"), "pm10_ugm3", false},

		{"raw ID", KindAttendance, with(KindAttendance, goldenWorker, "110101199003074514"), "worker", false},
		{"upper-case ref", KindAttendance, with(KindAttendance, goldenWorker, strings.ToUpper(goldenWorker)), "worker", false},
		{"direction", KindAttendance, with(KindAttendance, `"in"`, `"IN"`), "direction", false},
		{"method", KindAttendance, with(KindAttendance, `"face"`, `"iris"`), "method", false},
		{"empty text", KindAttendance, with(KindAttendance, "north-2", ""), "gate", false},
		{"long text", KindAttendance, with(KindAttendance, "north-2", strings.Repeat("x", 65)), "gate", false},
		{"control char", KindAttendance, with(KindAttendance, "north-2", `north\n2`), "gate", false},
		{"text as number", KindAttendance, with(KindAttendance, `"north-2"`, `2`), "gate", false},

		{"fen fraction", KindWage, with(KindWage, "861250", "861250.5"), "amount_fen", false},
		{"fen exponent", KindWage, with(KindWage, "861250", "8.6125e5"), "amount_fen", false},
		{"fen negative", KindWage, with(KindWage, "861250", "-861250"), "amount_fen", false},
		{"fen zero", KindWage, with(KindWage, "861250", "0"), "amount_fen", false},
		{"fen string", KindWage, with(KindWage, "861250", `"861250"`), "amount_fen", false},
		{"fen over a million yuan", KindWage, with(KindWage, "861250", "100000001"), "amount_fen", false},
		{"fen at a million yuan", KindWage, with(KindWage, "861250", "100000000"), "", true},
		{"fen overflow", KindWage, with(KindWage, "861250", "99999999999999999999"), "amount_fen", false},
		{"period month 13", KindWage, with(KindWage, "2026-10", "2026-13"), "period", false},
		{"period with day", KindWage, with(KindWage, "2026-10", "2026-10-01"), "period", false},
		{"account raw", KindWage, with(KindWage, goldenAccount, "6222020200112233445"), "account", false},

		{"instrument", KindSurvey, with(KindSurvey, "gnss-rtk", "GNSS-RTK"), "instrument", false},
		{"x negative", KindSurvey, with(KindSurvey, "3378215.482", "-1"), "x_m", false},
		{"y beyond zones", KindSurvey, with(KindSurvey, "39512044.917", "46000000.5"), "y_m", false},
		{"h below -500", KindSurvey, with(KindSurvey, "12.306", "-500.1"), "h_m", false},
		{"precision above 10", KindSurvey, with(KindSurvey, "0.008", "10.5"), "h_prec_m", false},
		{"v precision negative", KindSurvey, with(KindSurvey, "0.015", "-0.001"), "v_prec_m", false},
		{"parcel missing", KindSurvey, with(KindSurvey, `,"parcel":"320506-004-0112"`, ""), "parcel", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateData(tt.kind, []byte(tt.data))
			if tt.ok {
				if err != nil {
					t.Fatalf("ValidateData(%s, %s) = %v", tt.kind, tt.data, err)
				}
				return
			}
			var fe *FieldError
			if !errors.As(err, &fe) || !errors.Is(err, ErrSchema) {
				t.Fatalf("ValidateData(%s, %s) = %v, want a *FieldError", tt.kind, tt.data, err)
			}
			if fe.Field != tt.field {
				t.Fatalf("error %v names field %q, want %q", err, fe.Field, tt.field)
			}
		})
	}
}
