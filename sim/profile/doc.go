// Package profile is what the simulated devices of package sim observe:
// for each device kind a deterministic generator of readings (attendance
// passes and the month-end wage run of a site's payroll terminal, with
// wage-arrears cases seeded on request; survey points along traverses;
// dust and noise through the working day), on the site's clock (SiteZone).
// Given the same GenConfig a generator yields the same readings. It knows
// nothing of keys, MQTT or the gateway.
package profile
