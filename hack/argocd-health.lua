-- Argo CD health check for Dockyard's Dataset, TrainingRun and ModelDeployment.
-- Install it under resource.customizations.health.dockyard.dev_<Kind> in argocd-cm
-- (see the README, "Observability and GitOps"). The same script serves all three kinds.
--
--   Ready=True                                   -> Healthy
--   phase Failed / Invalid / Rejected / Degraded -> Degraded
--   Ready=False with reason InvalidSpec          -> Degraded
--   status not yet written, or written for an
--   older generation, or Ready False/Unknown     -> Progressing
--   ModelDeployment rollout RolledBack / Blocked -> Degraded (the candidate was refused)
--   rollout Waiting / Progressing / AwaitingApproval / Baking -> Progressing
local hs = {}
local degraded_phases = { Failed = true, Invalid = true, Rejected = true, Degraded = true }

if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Dockyard operator to report status"
  return hs
end

local phase = obj.status.phase
local ready = nil
if obj.status.conditions ~= nil then
  for _, condition in ipairs(obj.status.conditions) do
    if condition.type == "Ready" then
      ready = condition
    end
  end
end

local function describe(default)
  if ready ~= nil and ready.message ~= nil and ready.message ~= "" then
    return ready.message
  end
  if phase ~= nil then
    return "Phase: " .. phase
  end
  return default
end

local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local rollout = obj.status.rollout
if rollout ~= nil and rollout.phase ~= nil and phase ~= "Invalid" then
  local rolling = { Waiting = true, Progressing = true, AwaitingApproval = true, Baking = true }
  if rollout.phase == "RolledBack" or rollout.phase == "Blocked" then
    hs.status = "Degraded"
    hs.message = "Rollout " .. rollout.phase .. ": " .. (rollout.message or "")
    return hs
  end
  if rolling[rollout.phase] then
    hs.status = "Progressing"
    hs.message = "Rollout " .. rollout.phase .. " " .. (rollout.summary or "") .. ": " .. (rollout.message or "")
    return hs
  end
end

if phase ~= nil and degraded_phases[phase] then
  hs.status = "Degraded"
  hs.message = describe(phase)
  return hs
end

if ready ~= nil then
  if ready.status == "True" then
    hs.status = "Healthy"
    hs.message = describe("Ready")
    return hs
  end
  if ready.status == "False" and ready.reason == "InvalidSpec" then
    hs.status = "Degraded"
    hs.message = describe("Invalid spec")
    return hs
  end
end

hs.status = "Progressing"
hs.message = describe("Reconciling")
return hs
