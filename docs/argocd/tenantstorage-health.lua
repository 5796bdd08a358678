-- Argo CD health check for storage.tenancy.dev/TenantStorage (and any kind of this operator that
-- follows kstatus: a Ready condition plus status.observedGeneration).
-- Install: see docs/argocd/README.md.
local hs = {}
local annotations = (obj.metadata or {}).annotations or {}
if annotations["storage.tenancy.dev/paused"] == "true" then
  hs.status = "Suspended"
  hs.message = "reconciliation paused by the storage.tenancy.dev/paused annotation"
  return hs
end
local status = obj.status
if status == nil or status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "waiting for the operator"
  return hs
end
local generation = (obj.metadata or {}).generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "waiting for the operator to observe the latest spec"
  return hs
end
for _, condition in ipairs(status.conditions) do
  if condition.type == "Ready" then
    if condition.status == "True" then
      hs.status = "Healthy"
    elseif condition.reason == "Provisioning" then
      hs.status = "Progressing"
    else
      hs.status = "Degraded"
    end
    hs.message = (condition.reason or "") .. ": " .. (condition.message or "")
    return hs
  end
end
hs.status = "Progressing"
hs.message = "waiting for the Ready condition"
return hs
