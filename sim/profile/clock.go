package profile

import "time"

// SiteZone is the local time of the simulated sites (China Standard Time,
// UTC+8, no daylight saving). Shifts and working hours are local times;
// envelope timestamps are written in UTC.
var SiteZone = time.FixedZone("CST", 8*3600)

// DefaultStart is where a new fleet's simulated clocks begin when no start
// is given: 00:00 site time two days before the end of the previous month,
// so that a demo soon shows a month-end wage run and then catches up with
// the wall clock.
func DefaultStart(now time.Time) time.Time {
	l := now.In(SiteZone)
	firstOfMonth := time.Date(l.Year(), l.Month(), 1, 0, 0, 0, 0, SiteZone)
	return firstOfMonth.AddDate(0, 0, -2)
}

// localDay returns 00:00 site time of the day holding t.
func localDay(t time.Time) time.Time {
	l := t.In(SiteZone)
	return time.Date(l.Year(), l.Month(), l.Day(), 0, 0, 0, 0, SiteZone)
}

// lastDayOfMonth reports whether day (a localDay) is the last day of its month.
func lastDayOfMonth(day time.Time) bool {
	return day.AddDate(0, 0, 1).Month() != day.Month()
}
