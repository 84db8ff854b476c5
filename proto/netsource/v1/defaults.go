// Package netsourcev1 holds netsource's protobuf events (generated from proto/netsource/v1)
// and small accessors that apply Neutron's defaults to fields left out.
package netsourcev1

// IsAdminStateUp reports admin_state_up; left out means true, as in Neutron.
func (x *Network) IsAdminStateUp() bool { return x.AdminStateUp == nil || *x.AdminStateUp }

// IsAdminStateUp reports admin_state_up; left out means true, as in Neutron.
func (x *Port) IsAdminStateUp() bool { return x.AdminStateUp == nil || *x.AdminStateUp }

// IsPortSecurityEnabled reports port_security_enabled; left out means true, as in Neutron.
func (x *Port) IsPortSecurityEnabled() bool {
	return x.PortSecurityEnabled == nil || *x.PortSecurityEnabled
}

// IsAdminStateUp reports admin_state_up; left out means true, as in Neutron.
func (x *Trunk) IsAdminStateUp() bool { return x.AdminStateUp == nil || *x.AdminStateUp }

// IsAdminStateUp reports admin_state_up; left out means true, as in Neutron.
func (x *LoadBalancer) IsAdminStateUp() bool { return x.AdminStateUp == nil || *x.AdminStateUp }

// IsAdminStateUp reports admin_state_up; left out means true, as in Neutron.
func (x *Listener) IsAdminStateUp() bool { return x.AdminStateUp == nil || *x.AdminStateUp }

// EffectiveConnectionLimit returns connection_limit; left out means -1 (unlimited).
func (x *Listener) EffectiveConnectionLimit() int32 {
	if x.ConnectionLimit == nil {
		return -1
	}
	return *x.ConnectionLimit
}

// IsAdminStateUp reports admin_state_up; left out means true, as in Neutron.
func (x *Pool) IsAdminStateUp() bool { return x.AdminStateUp == nil || *x.AdminStateUp }

// IsAdminStateUp reports admin_state_up; left out means true, as in Neutron.
func (x *HealthMonitor) IsAdminStateUp() bool { return x.AdminStateUp == nil || *x.AdminStateUp }

// IsAdminStateUp reports admin_state_up; left out means true, as in Neutron.
func (x *Member) IsAdminStateUp() bool { return x.AdminStateUp == nil || *x.AdminStateUp }

// EffectiveWeight returns weight; left out means 1.
func (x *Member) EffectiveWeight() uint32 {
	if x.Weight == nil {
		return 1
	}
	return *x.Weight
}
