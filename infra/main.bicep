// In-store order sync: everything the Functions app needs, in one resource group.
//
// Service Bus (topic `orders` + subscription `order-sync` for the accept stage; topic
// `order-deliveries` with one filtered subscription per lane, generated from infra/lanes.json),
// storage (host storage, Flex deployment container, delivery ledger table), Key Vault (RBAC) for
// the destination and loyalty secrets, Log Analytics + Application Insights (and the delivery
// overview workbook), the Function App
// (Linux, Python 3.11, Flex Consumption FC1 or Elastic Premium EP1) with a system-assigned identity
// and least-privilege role assignments, and alerts on dead letters and backlogs, per lane. The
// destinations' app settings come from lanes.json as well (defaults, Key Vault references, the
// required ones), with `destinationSettings` for what a deployment sets.
//
// infra/main.json is the same template written as ARM JSON (kept in step by tests/test_infra.py);
// see infra/README.md.

targetScope = 'resourceGroup'

// ---------------------------------------------------------------------------------------------
// Naming and placement
// ---------------------------------------------------------------------------------------------

@description('Short name used in every resource name: lowercase letters and digits, 3-12 chars.')
@minLength(3)
@maxLength(12)
param baseName string = 'ordersync'

@description('Region of every resource. Flex Consumption is not offered in every region.')
param location string = resourceGroup().location

@description('Tags applied to every resource.')
param tags object = {}

// ---------------------------------------------------------------------------------------------
// Hosting
// ---------------------------------------------------------------------------------------------

@description('FC1 = Flex Consumption (default, scales to zero), EP1 = Elastic Premium (always warm, VNet, slots). See infra/README.md.')
@allowed([
  'FC1'
  'EP1'
])
param hostingPlan string = 'FC1'

@description('Flex Consumption: upper bound on instances.')
@minValue(40)
@maxValue(1000)
param flexMaximumInstanceCount int = 40

@description('Flex Consumption: memory per instance (MB).')
@allowed([
  512
  2048
  4096
])
param flexInstanceMemoryMB int = 2048

@description('Elastic Premium: always-ready instances.')
@minValue(1)
@maxValue(20)
param premiumMinimumInstances int = 1

@description('Elastic Premium: maximum burst instances.')
@minValue(1)
@maxValue(100)
param premiumMaximumInstances int = 5

@description('Storage redundancy of the host/ledger account.')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
])
param storageSku string = 'Standard_LRS'

// The delivery overview: per lane delivered, skipped, retried and dead-lettered; backlog,
// dead-letter depth and oldest message per subscription (the lane_metrics gauges); latency per
// vendor; top rejection reasons; the loyalty cache. docs/operations.md shows its layout.
resource deliveryWorkbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(resourceGroup().id, baseName, 'delivery-overview')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: '${baseName}: delivery overview'
    category: 'workbook'
    sourceId: appInsights.id
    serializedData: string(union(workbookContent, { fallbackResourceIds: [ appInsights.id ] }))
  }
}

// ---------------------------------------------------------------------------------------------
// Service Bus
// ---------------------------------------------------------------------------------------------

@description('Service Bus tier. Standard covers duplicate detection and sessions; Premium adds isolation, VNet and larger messages.')
@allowed([
  'Standard'
  'Premium'
])
param serviceBusSku string = 'Standard'

@description('Disable SAS keys on the namespace (Entra ID only). Set false only if the ERP publisher still needs a SAS connection string.')
param serviceBusDisableLocalAuth bool = true

@description('The order-sync subscription, every lane and the accept-retry subscription require sessions (SessionId = orderId). Fixed once created: changing it means recreating the subscriptions.')
param ordersSessionsEnabled bool = false

@description('Deliver in batches: the topic trigger receives up to host.json maxMessageBatchSize messages per call and sends them in bulk (Profile Store TrackBulk, RichRelevance POST, eSputnik orders array); each message is still settled on its own. See docs/performance.md.')
param ordersBatchEnabled bool = false

@description('Largest order message accepted (bytes): 256 KB on Standard; on Premium up to the entities\' maximum message size (100 MB).')
@minValue(1024)
@maxValue(104857600)
param ordersMaxMessageBytes int = 262144

@description('Duplicate detection window of the orders topic (ISO 8601).')
param duplicateDetectionWindow string = 'PT1H'

@description('Default message time to live of the orders topic and its subscription; expired messages are dead-lettered.')
param messageTimeToLive string = 'P14D'

@description('Duplicate detection window of the deliveries topic (ISO 8601). A day covers a redelivered or re-accepted order (its delivery messages keep their MessageId) and same-day re-publishes; the delivery ledger stops older duplicates. See infra/README.md.')
param deliveriesDuplicateDetectionWindow string = 'P1D'

@description('Days a delivery message may wait in its lane (a paused lane keeps its messages this long, then dead-letters them as expired). At least 14.')
@minValue(14)
param laneMessageTimeToLiveDays int = 14

// ---------------------------------------------------------------------------------------------
// Application settings (non-secret). Secrets are Key Vault references, never parameters.
// ---------------------------------------------------------------------------------------------

@allowed([
  'DEBUG'
  'INFO'
  'WARNING'
  'ERROR'
])
param logLevel string = 'INFO'

@description('Seconds of immediate retries per message (loyalty + destinations).')
@minValue(1)
@maxValue(240)
param retryBudgetSeconds int = 30

@description('Minutes a message keeps being retried (retry copies on its lane) before RetriesExhausted.')
@minValue(1)
param retryWindowMinutes int = 180

@minValue(1)
@maxValue(100)
param retryMinAttempts int = 3

@description('Backoff steps of the retry copies, minutes, comma-separated.')
param retryBackoffMinutes string = '1,5,15,30,60'

@description('Loyalty provider base URL (required in Azure: LOYALTY_FILE is for local runs only).')
@minLength(1)
param loyaltyApiBaseUrl string

param loyaltyLookupPath string = '/cards/{card}'

@allowed([
  'header'
  'basic'
  'oauth2'
  'none'
])
param loyaltyAuth string = 'header'

param loyaltyApiKeyHeader string = 'Ocp-Apim-Subscription-Key'
param loyaltyApiKeyPrefix string = ''
param loyaltyUsername string = ''
param loyaltyTokenUrl string = ''
param loyaltyClientId string = ''
param loyaltyScope string = ''

@description('The destinations\' non-secret app settings this deployment sets: every setting an enabled destination requires (`required` in infra/lanes.json, e.g. PROFILE_STORE_BASE_URL) and any default to change (e.g. RICHRELEVANCE_MODE, or PRODUCT_RECS_ENABLED: \'false\'). Names and defaults: README "Settings". Not secrets (Key Vault references, from lanes.json) nor <NAME>_SUBSCRIPTION (the template\'s): a name that is not a destination\'s setting, or a required one missing, fails the deployment.')
param destinationSettings object = {}

@description('Extra or overriding non-secret app settings other than the destinations\' (e.g. LOYALTY_CACHE_TTL_SECONDS, or a lane\'s AzureWebJobs.deliver_<name>.Disabled pause). Cannot override the identity connections, the entity names or the Key Vault references; a destination\'s setting here fails the deployment (destinationSettings).')
param appSettingsOverrides object = {}

// ---------------------------------------------------------------------------------------------
// Operations
// ---------------------------------------------------------------------------------------------

@description('Email for alert notifications; empty = alerts without an action group.')
param alertEmail string = ''

@description('Backlog alert of each lane: its deliveries reach the vendor on average more than this many minutes after the order arrived (over 30 minutes).')
@minValue(1)
param laneBacklogMinutes int = 30

@description('Backlog alert of the deliveries topic: active messages of all lanes together stay above this for 30 minutes (a stopped or paused lane).')
@minValue(1)
param deliveriesBacklogMessages int = 1000

@description('The lane_metrics function: every minute, each lane\'s active messages, dead letters, oldest message age and pause as gauges (the workbook and the per-lane depth, age and pause alerts read them), its counts from Azure Resource Manager with Reader on the topics. See docs/operations.md.')
param laneMetricsEnabled bool = true

@description('Dead-letter depth alert of each lane: fires while its dead-letter queue holds more than this many messages (the lane_metrics gauge; the broker\'s own dead letters included).')
@minValue(0)
param laneDeadLetterDepth int = 0

@description('Backlog age alert of each lane: fires when its oldest waiting message has been older than this many minutes for 15 minutes (the lane_metrics gauge).')
@minValue(1)
param laneOldestMessageMinutes int = 30

@description('Pause alert of each lane: fires when its function has been disabled (AzureWebJobs.<function>.Disabled) for this many hours (the lane_metrics gauge; a log alert\'s window is at most two days).')
@minValue(1)
@maxValue(48)
param lanePausedHours int = 4

@description('Object id of the operators (user or group): Key Vault Secrets Officer, DLQ tools and publish. Empty = none.')
param operatorPrincipalId string = ''

@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
param operatorPrincipalType string = 'Group'

@description('Key Vault purge protection (cannot be turned off once on; leave true outside throwaway environments).')
param keyVaultPurgeProtection bool = true

@minValue(30)
@maxValue(730)
param logRetentionDays int = 30

// ---------------------------------------------------------------------------------------------
// Names and constants
// ---------------------------------------------------------------------------------------------

var isFlex = hostingPlan == 'FC1'
var token = uniqueString(resourceGroup().id, baseName)
var serviceBusName = 'sb-${baseName}-${token}'
var storageName = 'st${take(toLower(replace(baseName, '-', '')), 9)}${token}'
var keyVaultName = 'kv-${take(baseName, 8)}-${take(token, 10)}'
var workspaceName = 'log-${baseName}-${token}'
var appInsightsName = 'appi-${baseName}-${token}'
var planName = 'plan-${baseName}-${token}'
var functionAppName = 'func-${baseName}-${token}'
var actionGroupName = 'ag-${baseName}-${token}'

var ordersTopic = 'orders'
var ordersSubscription = 'order-sync'
var deliveriesTopic = 'order-deliveries'
var deliveryLedgerTable = 'orderdeliveries'

// The lanes: one subscription of the deliveries topic per registered destination, plus the accept
// stage's retry lane. Generated from the app's destination registry, never edited by hand:
// `python -m order_processor.infra_lanes` (it writes the same array into main.json).
var lanes = loadJsonContent('lanes.json').lanes
var destinationLanes = filter(lanes, lane => lane.kind == 'destination')
// The delivery overview workbook (Notebook/1.0), generated with the lanes (its lane picker lists
// them) by the same command; every query is checked against the app's telemetry in the tests.
var workbookContent = loadJsonContent('workbook.json')
var laneMessageTimeToLive = 'P${laneMessageTimeToLiveDays}D'
var deploymentContainer = 'app-package'
var contentShare = take(toLower(functionAppName), 63)
var contentShareSecretName = 'content-share-connection-string'

var keyVaultUri = 'https://${keyVaultName}${environment().suffixes.keyvaultDns}/'
var tableServiceUri = 'https://${storageName}.table.${environment().suffixes.storage}'

// Built-in role definition ids (identical in every subscription).
var roles = {
  serviceBusDataReceiver: '4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0'
  serviceBusDataSender: '69a216fc-b8fb-44d8-bc22-1f3c2cd27a39'
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6'
  keyVaultSecretsOfficer: 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
  reader: 'acdd72a7-3385-485e-a4ce-3d80b5e72f4c'
}

// The loyalty provider's secret app settings -> Key Vault references (the destinations' come from
// lanes.json: destinationSecretSettings). Set the values with `az keyvault secret set`.
var secretSettings = {
  LOYALTY_API_KEY: '@Microsoft.KeyVault(SecretUri=${keyVaultUri}secrets/loyalty-api-key/)'
  LOYALTY_CLIENT_SECRET: '@Microsoft.KeyVault(SecretUri=${keyVaultUri}secrets/loyalty-client-secret/)'
  LOYALTY_PASSWORD: '@Microsoft.KeyVault(SecretUri=${keyVaultUri}secrets/loyalty-password/)'
}

// Defaults of the tunables (README "Settings"); appSettingsOverrides can change them.
var tunableSettings = {
  DESTINATION_CONNECT_TIMEOUT_SECONDS: '5'
  DESTINATION_READ_TIMEOUT_SECONDS: '10'
  DESTINATION_TIMEOUT_SECONDS: '15'
  DESTINATION_MAX_ATTEMPTS: '4'
  DESTINATION_MAX_RESPONSE_BYTES: '1048576'
  HTTP_TRANSPORT: 'keepalive'
  DELIVERY_LEDGER_LEGACY_LOOKUP: 'false'
  LOYALTY_EMAIL_FIELD: 'email'
  LOYALTY_CUSTOMER_ID_FIELD: 'customerId'
  LOYALTY_FIRST_NAME_FIELD: 'firstName'
  LOYALTY_LAST_NAME_FIELD: 'lastName'
  LOYALTY_PHONE_FIELD: 'phone'
  LOYALTY_NOT_FOUND_STATUSES: '404'
  LOYALTY_CONNECT_TIMEOUT_SECONDS: '3'
  LOYALTY_READ_TIMEOUT_SECONDS: '5'
  LOYALTY_TIMEOUT_SECONDS: '8'
  LOYALTY_MAX_ATTEMPTS: '3'
  LOYALTY_CACHE_TTL_SECONDS: '3600'
  LOYALTY_NEGATIVE_CACHE_TTL_SECONDS: '300'
  LOYALTY_CACHE_MAX_ENTRIES: '100000'
}

// Entity names the trigger bindings read (%NAME%): they must name what this template creates, so
// appSettingsOverrides cannot change them.
var entitySettings = {
  ORDERS_TOPIC: ordersTopic
  ORDERS_SUBSCRIPTION: ordersSubscription
  DELIVERIES_TOPIC: deliveriesTopic
}

// Each lane's subscription: <NAME>_SUBSCRIPTION per destination, and ACCEPT_RETRY_SUBSCRIPTION.
var laneSettings = toObject(lanes, lane => lane.subscriptionSetting, lane => lane.subscription)

// The destinations' own settings, from their settings classes via lanes.json (never written here):
// each lane's non-secret settings with the app's defaults ('' = unset), what destinationSettings
// sets over them, and its secrets as Key Vault references. A new destination's settings arrive
// with `python -m order_processor.infra_lanes`, like its subscription.
var destinationDefaults = reduce(destinationLanes, {}, (merged, lane) => union(merged, lane.settings))
var destinationOverrides = toObject(items(destinationSettings), setting => setting.key, setting => setting.value == true ? 'true' : setting.value == false ? 'false' : string(setting.value))
var destinationValues = union(destinationDefaults, destinationOverrides)
var destinationSecrets = reduce(destinationLanes, {}, (merged, lane) => union(merged, lane.secrets))
var destinationSecretSettings = toObject(items(destinationSecrets), secret => secret.key, secret => '@Microsoft.KeyVault(SecretUri=${keyVaultUri}secrets/${secret.value}/)')

// Checked by the template rather than left to the app's start-up validation: a name in
// destinationSettings that is no destination's non-secret setting (a typo, a secret, a
// subscription), a destination's setting given in appSettingsOverrides instead, or a required one
// an enabled destination lacks fails the deployment (fail()) naming them, before the app settings
// are written. A destination is enabled unless its <NAME>_ENABLED is one of the app's false values.
var settingFalseValues = ['false', '0', 'off', 'no', 'f', 'n']
var unknownDestinationSettings = filter(map(items(destinationSettings), setting => setting.key), name => !contains(destinationDefaults, name))
var misplacedDestinationSettings = filter(map(items(appSettingsOverrides), setting => setting.key), name => contains(destinationDefaults, name))
var enabledDestinationLanes = filter(destinationLanes, lane => !contains(settingFalseValues, toLower(destinationValues[lane.enabledSetting])))
var requiredDestinationSettings = flatten(map(enabledDestinationLanes, lane => lane.required))
var missingDestinationSettings = filter(requiredDestinationSettings, name => empty(destinationValues[name]))
var destinationAppSettings = !empty(unknownDestinationSettings)
  ? fail('destinationSettings: ${join(unknownDestinationSettings, ', ')}: not a destination\'s non-secret setting (secrets are Key Vault references, <NAME>_SUBSCRIPTION is the template\'s, other settings go in appSettingsOverrides)')
  : !empty(misplacedDestinationSettings)
      ? fail('appSettingsOverrides: ${join(misplacedDestinationSettings, ', ')}: a destination\'s setting, set it in destinationSettings')
      : !empty(missingDestinationSettings)
          ? fail('destinationSettings: missing ${join(missingDestinationSettings, ', ')}, required while the destination is enabled (or set its <NAME>_ENABLED to \'false\')')
          : destinationValues

var appSettings = {
  ORDERS_SESSIONS_ENABLED: ordersSessionsEnabled ? 'true' : 'false'
  ORDERS_BATCH_ENABLED: ordersBatchEnabled ? 'true' : 'false'
  ORDERS_MAX_MESSAGE_BYTES: string(ordersMaxMessageBytes)
  RETRY_BUDGET_SECONDS: string(retryBudgetSeconds)
  RETRY_WINDOW_MINUTES: string(retryWindowMinutes)
  RETRY_MIN_ATTEMPTS: string(retryMinAttempts)
  RETRY_BACKOFF_MINUTES: retryBackoffMinutes
  DELIVERY_LEDGER_ENABLED: 'true'
  DELIVERY_LEDGER_TABLE: deliveryLedgerTable
  LOG_LEVEL: logLevel
  ALLOW_INSECURE_HTTP: 'false'
  LOG_FORMAT: 'json'
  LOYALTY_API_BASE_URL: loyaltyApiBaseUrl
  LOYALTY_LOOKUP_PATH: loyaltyLookupPath
  LOYALTY_AUTH: loyaltyAuth
  LOYALTY_API_KEY_HEADER: loyaltyApiKeyHeader
  LOYALTY_API_KEY_PREFIX: loyaltyApiKeyPrefix
  LOYALTY_USERNAME: loyaltyUsername
  LOYALTY_TOKEN_URL: loyaltyTokenUrl
  LOYALTY_CLIENT_ID: loyaltyClientId
  LOYALTY_SCOPE: loyaltyScope
  LANE_METRICS_ENABLED: laneMetricsEnabled ? 'true' : 'false'
}

// Identity-based connections: no connection string with a key anywhere in the app settings.
var connectionSettings = {
  AzureWebJobsStorage__accountName: storageName
  AzureWebJobsStorage__credential: 'managedidentity'
  ServiceBusConnection__fullyQualifiedNamespace: '${serviceBusName}.servicebus.windows.net'
  ServiceBusConnection__credential: 'managedidentity'
  DELIVERY_LEDGER_CONNECTION__tableServiceUri: tableServiceUri
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'Authorization=AAD'
  SERVICE_BUS_RESOURCE_ID: serviceBus.id
}

// Elastic Premium only: Flex Consumption rejects these (runtime and content live in
// functionAppConfig there). The Azure Files share needs a key, so it is a Key Vault reference.
var premiumSettings = {
  FUNCTIONS_EXTENSION_VERSION: '~4'
  FUNCTIONS_WORKER_RUNTIME: 'python'
  WEBSITE_CONTENTAZUREFILECONNECTIONSTRING: '@Microsoft.KeyVault(SecretUri=${keyVaultUri}secrets/${contentShareSecretName}/)'
  WEBSITE_CONTENTSHARE: contentShare
  WEBSITE_SKIP_CONTENTSHARE_VALIDATION: '1'
}

var siteConfigFlex = {
  minTlsVersion: '1.2'
  scmMinTlsVersion: '1.2'
  http20Enabled: true
}

var siteConfigPremium = {
  linuxFxVersion: 'Python|3.11'
  minTlsVersion: '1.2'
  scmMinTlsVersion: '1.2'
  http20Enabled: true
  ftpsState: 'Disabled'
  use32BitWorkerProcess: false
  minimumElasticInstanceCount: premiumMinimumInstances
}

var serviceBusStandardSku = {
  name: 'Standard'
  tier: 'Standard'
}

var serviceBusPremiumSku = {
  name: 'Premium'
  tier: 'Premium'
  capacity: 1
}

var flexPlanSku = {
  name: 'FC1'
  tier: 'FlexConsumption'
}

var premiumPlanSku = {
  name: 'EP1'
  tier: 'ElasticPremium'
}

var flexPlanProperties = {
  reserved: true
}

var premiumPlanProperties = {
  reserved: true
  maximumElasticWorkerCount: premiumMaximumInstances
}

// Flex Consumption: runtime, scale and the deployment package container (reached with the
// app's identity) replace the app settings and site properties other plans use.
var flexFunctionAppConfig = {
  deployment: {
    storage: {
      type: 'blobContainer'
      value: 'https://${storageName}.blob.${environment().suffixes.storage}/${deploymentContainer}'
      authentication: {
        type: 'SystemAssignedIdentity'
      }
    }
  }
  scaleAndConcurrency: {
    maximumInstanceCount: flexMaximumInstanceCount
    instanceMemoryMB: flexInstanceMemoryMB
  }
  runtime: {
    name: 'python'
    version: '3.11'
  }
}

// ---------------------------------------------------------------------------------------------
// Monitoring
// ---------------------------------------------------------------------------------------------

resource workspace 'Microsoft.OperationalInsights/workspaces@2022-10-01' = {
  name: workspaceName
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: logRetentionDays
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: appInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspace.id
    IngestionMode: 'LogAnalytics'
    DisableLocalAuth: true
  }
}

// ---------------------------------------------------------------------------------------------
// Service Bus
// ---------------------------------------------------------------------------------------------

resource serviceBus 'Microsoft.ServiceBus/namespaces@2024-01-01' = {
  name: serviceBusName
  location: location
  tags: tags
  sku: serviceBusSku == 'Premium' ? serviceBusPremiumSku : serviceBusStandardSku
  properties: {
    minimumTlsVersion: '1.2'
    disableLocalAuth: serviceBusDisableLocalAuth
    publicNetworkAccess: 'Enabled'
  }
}

resource topic 'Microsoft.ServiceBus/namespaces/topics@2024-01-01' = {
  parent: serviceBus
  name: ordersTopic
  properties: {
    requiresDuplicateDetection: true
    duplicateDetectionHistoryTimeWindow: duplicateDetectionWindow
    defaultMessageTimeToLive: messageTimeToLive
    enableBatchedOperations: true
    supportOrdering: true
  }
}

resource orderSyncSubscription 'Microsoft.ServiceBus/namespaces/topics/subscriptions@2024-01-01' = {
  parent: topic
  name: ordersSubscription
  properties: {
    lockDuration: 'PT1M'
    maxDeliveryCount: 10
    deadLetteringOnMessageExpiration: true
    deadLetteringOnFilterEvaluationExceptions: true
    requiresSession: ordersSessionsEnabled
    defaultMessageTimeToLive: messageTimeToLive
    enableBatchedOperations: true
  }
}

// The deliveries topic: the accept stage publishes one message per routed destination
// (MessageId `<event key>:<destination>`, property `destination`), and retry copies for one lane.
resource deliveries 'Microsoft.ServiceBus/namespaces/topics@2024-01-01' = {
  parent: serviceBus
  name: deliveriesTopic
  properties: {
    requiresDuplicateDetection: true
    duplicateDetectionHistoryTimeWindow: deliveriesDuplicateDetectionWindow
    defaultMessageTimeToLive: laneMessageTimeToLive
    enableBatchedOperations: true
    supportOrdering: true
  }
}

// One subscription per lane. No autoDeleteOnIdle: a paused lane must keep its subscription.
resource laneSubscriptions 'Microsoft.ServiceBus/namespaces/topics/subscriptions@2024-01-01' = [for lane in lanes: {
  parent: deliveries
  name: lane.subscription
  properties: {
    lockDuration: 'PT1M'
    maxDeliveryCount: 10
    deadLetteringOnMessageExpiration: true
    deadLetteringOnFilterEvaluationExceptions: true
    requiresSession: ordersSessionsEnabled
    defaultMessageTimeToLive: laneMessageTimeToLive
    enableBatchedOperations: true
  }
}]

// Each lane's filter is written over the subscription's `$Default` rule (a TrueFilter, created with
// every subscription, that would let every delivery message in): one rule per lane, no catch-all.
resource laneFilters 'Microsoft.ServiceBus/namespaces/topics/subscriptions/rules@2024-01-01' = [for (lane, i) in lanes: {
  parent: laneSubscriptions[i]
  name: '$Default'
  properties: {
    filterType: 'SqlFilter'
    sqlFilter: {
      sqlExpression: lane.filter
    }
  }
}]

// ---------------------------------------------------------------------------------------------
// Storage: host storage, Flex deployment package, delivery ledger
// ---------------------------------------------------------------------------------------------

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: storageName
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: storageSku
  }
  properties: {
    accessTier: 'Hot'
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    allowBlobPublicAccess: false
    // Flex uses identities only; the Elastic Premium content share (Azure Files) needs a key.
    allowSharedKeyAccess: !isFlex
    defaultToOAuthAuthentication: true
    allowCrossTenantReplication: false
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource packageContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = if (isFlex) {
  parent: blobService
  name: deploymentContainer
  properties: {
    publicAccess: 'None'
  }
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource ledgerTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: tableService
  name: deliveryLedgerTable
}

resource fileService 'Microsoft.Storage/storageAccounts/fileServices@2023-05-01' = if (!isFlex) {
  parent: storage
  name: 'default'
}

resource contentFileShare 'Microsoft.Storage/storageAccounts/fileServices/shares@2023-05-01' = if (!isFlex) {
  parent: fileService
  name: contentShare
}

// ---------------------------------------------------------------------------------------------
// Key Vault (RBAC). Secret values are set by operators, never by this template, except the
// Elastic Premium content-share connection string, which only the platform reads.
// ---------------------------------------------------------------------------------------------

resource keyVault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: keyVaultName
  location: location
  tags: tags
  properties: {
    tenantId: tenant().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: keyVaultPurgeProtection ? true : null
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource contentShareSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!isFlex) {
  parent: keyVault
  name: contentShareSecretName
  properties: {
    value: 'DefaultEndpointsProtocol=https;AccountName=${storage.name};AccountKey=${storage.listKeys().keys[0].value};EndpointSuffix=${environment().suffixes.storage}'
  }
}

// ---------------------------------------------------------------------------------------------
// Function App
// ---------------------------------------------------------------------------------------------

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: isFlex ? 'functionapp' : 'elastic'
  sku: isFlex ? flexPlanSku : premiumPlanSku
  properties: isFlex ? flexPlanProperties : premiumPlanProperties
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  name: functionAppName
  location: location
  tags: tags
  kind: 'functionapp,linux'
  identity: {
    type: 'SystemAssigned'
  }
  properties: union(
    {
      serverFarmId: plan.id
      httpsOnly: true
      clientCertEnabled: false
      publicNetworkAccess: 'Enabled'
      siteConfig: isFlex ? siteConfigFlex : siteConfigPremium
    },
    isFlex ? { functionAppConfig: flexFunctionAppConfig } : {}
  )
  dependsOn: [
    packageContainer
  ]
}

// No FTP and no basic-auth deployments: publish with an Entra ID sign-in.
resource scmBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2023-12-01' = {
  parent: functionApp
  name: 'scm'
  properties: {
    allow: false
  }
}

resource ftpBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2023-12-01' = if (!isFlex) {
  parent: functionApp
  name: 'ftp'
  properties: {
    allow: false
  }
}

// App settings are their own resource, written after the role assignments, so the Key Vault
// references and identity connections resolve on the first start.
resource functionAppSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: functionApp
  name: 'appsettings'
  properties: union(
    appSettings,
    tunableSettings,
    appSettingsOverrides,
    destinationAppSettings,
    entitySettings,
    laneSettings,
    connectionSettings,
    {
      APPLICATIONINSIGHTS_CONNECTION_STRING: appInsights.properties.ConnectionString
    },
    isFlex ? {} : premiumSettings,
    secretSettings,
    destinationSecretSettings
  )
  dependsOn: [
    subscriptionReceiver
    laneReceivers
    deliveriesSender
    storageBlobOwner
    storageTableContributor
    keyVaultSecretsUser
    appInsightsPublisher
    deliveriesCountsReader
    orderSyncCountsReader
    contentShareSecret
    contentFileShare
    ledgerTable
  ]
}

// ---------------------------------------------------------------------------------------------
// Role assignments: the Function App identity
// ---------------------------------------------------------------------------------------------

resource subscriptionReceiver 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: orderSyncSubscription
  name: guid(orderSyncSubscription.id, functionApp.id, roles.serviceBusDataReceiver)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.serviceBusDataReceiver)
    principalId: functionApp.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

// Each lane's function receives from its own subscription only (Service Bus roles can be scoped
// to a queue, a topic or a subscription).
resource laneReceivers 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (lane, i) in lanes: {
  scope: laneSubscriptions[i]
  name: guid(laneSubscriptions[i].id, functionApp.id, roles.serviceBusDataReceiver)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.serviceBusDataReceiver)
    principalId: functionApp.identity.principalId
    principalType: 'ServicePrincipal'
  }
}]

// The accept stage publishes delivery messages, and every stage schedules its retry copies, on the
// deliveries topic. Nothing in the app sends to the orders topic (publish and replay are operators').
resource deliveriesSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: deliveries
  name: guid(deliveries.id, functionApp.id, roles.serviceBusDataSender)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.serviceBusDataSender)
    principalId: functionApp.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

// The lane_metrics function reads each lane's message counts from Azure Resource Manager
// (countDetails of the topic's subscriptions, the topic's scheduled count): Reader on the
// deliveries topic (its subscriptions inherit it) and on the order-sync subscription. Read-only,
// no message data; the namespace's own management API would need Manage rights (Data Owner). The
// oldest message's age comes from a peek, which the Data Receiver roles above already allow.
resource deliveriesCountsReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (laneMetricsEnabled) {
  scope: deliveries
  name: guid(deliveries.id, functionApp.id, roles.reader)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.reader)
    principalId: functionApp.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

resource orderSyncCountsReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (laneMetricsEnabled) {
  scope: orderSyncSubscription
  name: guid(orderSyncSubscription.id, functionApp.id, roles.reader)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.reader)
    principalId: functionApp.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

// Host storage with an identity: Blob Data Owner covers the host (and the Flex package); Table
// Data Contributor covers the delivery ledger and the host's diagnostic events. No queue role:
// the app has no blob trigger.
resource storageBlobOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: storage
  name: guid(storage.id, functionApp.id, roles.storageBlobDataOwner)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
    principalId: functionApp.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

resource storageTableContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: storage
  name: guid(storage.id, functionApp.id, roles.storageTableDataContributor)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageTableDataContributor)
    principalId: functionApp.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

resource keyVaultSecretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: keyVault
  name: guid(keyVault.id, functionApp.id, roles.keyVaultSecretsUser)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
    principalId: functionApp.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

// Application Insights ingestion with Entra ID (local auth is disabled on the component).
resource appInsightsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: appInsights
  name: guid(appInsights.id, functionApp.id, roles.monitoringMetricsPublisher)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
    principalId: functionApp.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

// ---------------------------------------------------------------------------------------------
// Role assignments: operators (optional)
// ---------------------------------------------------------------------------------------------

var hasOperator = !empty(operatorPrincipalId)

resource operatorSecretsOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (hasOperator) {
  scope: keyVault
  name: guid(keyVault.id, operatorPrincipalId, roles.keyVaultSecretsOfficer)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsOfficer)
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
  }
}

resource operatorSubscriptionReceiver 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (hasOperator) {
  scope: orderSyncSubscription
  name: guid(orderSyncSubscription.id, operatorPrincipalId, roles.serviceBusDataReceiver)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.serviceBusDataReceiver)
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
  }
}

// The dlq tools on every lane (peek, replay, purge).
resource operatorLaneReceivers 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (lane, i) in (hasOperator ? lanes : []): {
  scope: laneSubscriptions[i]
  name: guid(laneSubscriptions[i].id, operatorPrincipalId, roles.serviceBusDataReceiver)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.serviceBusDataReceiver)
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
  }
}]

// `dlq replay` of a lane's dead letters sends them back to the deliveries topic.
resource operatorDeliveriesSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (hasOperator) {
  scope: deliveries
  name: guid(deliveries.id, operatorPrincipalId, roles.serviceBusDataSender)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.serviceBusDataSender)
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
  }
}

resource operatorTopicSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (hasOperator) {
  scope: topic
  name: guid(topic.id, operatorPrincipalId, roles.serviceBusDataSender)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.serviceBusDataSender)
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
  }
}

// ---------------------------------------------------------------------------------------------
// Alerts
// ---------------------------------------------------------------------------------------------

var hasActionGroup = !empty(alertEmail)

var metricAlertActions = [
  {
    actionGroupId: actionGroup.id
  }
]

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = if (hasActionGroup) {
  name: actionGroupName
  location: 'Global'
  tags: tags
  properties: {
    groupShortName: 'ordersync'
    enabled: true
    emailReceivers: [
      {
        name: 'operators'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

// Service Bus metrics are per queue or topic (dimension EntityName), never per subscription: the
// `orders` alert covers its one subscription (order-sync); the `order-deliveries` alerts cover
// every lane together. Per-lane alerts below come from the app's own telemetry instead.
resource subscriptionDlqAlert 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: '${baseName}-dlq-${ordersSubscription}'
  location: 'global'
  tags: tags
  properties: {
    description: 'Dead letters waiting in ${ordersTopic}/${ordersSubscription} (invalid orders, refused loyalty lookups): read them with `python -m order_processor dlq peek`.'
    severity: 2
    enabled: true
    scopes: [
      serviceBus.id
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    autoMitigate: true
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'StaticThresholdCriterion'
          name: 'DeadLetters'
          metricNamespace: 'Microsoft.ServiceBus/namespaces'
          metricName: 'DeadletteredMessages'
          dimensions: [
            {
              name: 'EntityName'
              operator: 'Include'
              values: [
                ordersTopic
              ]
            }
          ]
          operator: 'GreaterThan'
          threshold: 0
          timeAggregation: 'Maximum'
        }
      ]
    }
    actions: hasActionGroup ? metricAlertActions : []
  }
}

// Every dead letter of every lane, whoever dead-lettered it: also the broker's own (a paused lane's
// messages expiring, MaxDeliveryCountExceeded), which the app never sees.
resource deliveriesDlqAlert 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: '${baseName}-dlq-${deliveriesTopic}'
  location: 'global'
  tags: tags
  properties: {
    description: 'Dead letters waiting in a lane of ${deliveriesTopic} (the metric does not say which): `python -m order_processor dlq peek --destination <lane>` for each lane, or `az servicebus topic subscription list -g ${resourceGroup().name} --namespace-name ${serviceBusName} --topic-name ${deliveriesTopic} --query "[].{lane:name, deadLetters:countDetails.deadLetterMessageCount}"`.'
    severity: 2
    enabled: true
    scopes: [
      serviceBus.id
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    autoMitigate: true
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'StaticThresholdCriterion'
          name: 'DeadLetters'
          metricNamespace: 'Microsoft.ServiceBus/namespaces'
          metricName: 'DeadletteredMessages'
          dimensions: [
            {
              name: 'EntityName'
              operator: 'Include'
              values: [
                deliveriesTopic
              ]
            }
          ]
          operator: 'GreaterThan'
          threshold: 0
          timeAggregation: 'Maximum'
        }
      ]
    }
    actions: hasActionGroup ? metricAlertActions : []
  }
}

// A lane that delivers nothing (stopped, failing to start, or paused) leaves no telemetry for its
// own backlog alert: the topic's active message count still grows. Minimum over 30 minutes, so a
// burst that drains does not raise it.
resource deliveriesBacklogAlert 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: '${baseName}-backlog-${deliveriesTopic}'
  location: 'global'
  tags: tags
  properties: {
    description: 'More than ${deliveriesBacklogMessages} delivery messages have waited in ${deliveriesTopic} for 30 minutes: a lane is paused, stopped or far behind. Which one: `az servicebus topic subscription list -g ${resourceGroup().name} --namespace-name ${serviceBusName} --topic-name ${deliveriesTopic} --query "[].{lane:name, active:countDetails.activeMessageCount}"`.'
    severity: 2
    enabled: true
    scopes: [
      serviceBus.id
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT30M'
    autoMitigate: true
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'StaticThresholdCriterion'
          name: 'Backlog'
          metricNamespace: 'Microsoft.ServiceBus/namespaces'
          metricName: 'ActiveMessages'
          dimensions: [
            {
              name: 'EntityName'
              operator: 'Include'
              values: [
                deliveriesTopic
              ]
            }
          ]
          operator: 'GreaterThan'
          threshold: deliveriesBacklogMessages
          timeAggregation: 'Minimum'
        }
      ]
    }
    actions: hasActionGroup ? metricAlertActions : []
  }
}

// Per lane: the messages the app dead-lettered on it (the `orders.dead_letters` counter by
// `orders.lane`: DestinationRejected, RetriesExhausted, InvalidMessage, ...). Each needs a person.
resource laneDeadLetterAlerts 'Microsoft.Insights/scheduledQueryRules@2022-06-15' = [for lane in lanes: {
  name: '${baseName}-lane-dead-letters-${lane.subscription}'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: '${baseName}: dead letters on lane ${lane.name}'
    description: 'The app dead-lettered messages on lane ${lane.name} (${deliveriesTopic}/${lane.subscription}). Read them with `python -m order_processor dlq peek --destination ${lane.name}`, fix the cause, then `dlq replay --destination ${lane.name}` (the ledger keeps delivered orders from being sent twice). Lane accept also counts orders dead-lettered on first delivery: those are in ${ordersTopic}/${ordersSubscription} (`dlq peek` without --destination).'
    severity: 2
    enabled: true
    scopes: [
      appInsights.id
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    autoMitigate: true
    criteria: {
      allOf: [
        {
          query: 'customMetrics | where name == "orders.dead_letters" and tostring(customDimensions["orders.lane"]) == "${lane.name}" | project timestamp, deadLetters = valueSum'
          timeAggregation: 'Total'
          metricMeasureColumn: 'deadLetters'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: {
      actionGroups: hasActionGroup ? [actionGroup.id] : []
    }
  }
}]

// Per destination lane: how old its deliveries are when they reach the vendor (the
// `orders.delivery.latency` histogram, from the order reaching the orders topic). Service Bus has
// no per-subscription message count and no message-age metric; this is the lane's own lag.
resource laneBacklogAlerts 'Microsoft.Insights/scheduledQueryRules@2022-06-15' = [for lane in destinationLanes: {
  name: '${baseName}-lane-backlog-${lane.subscription}'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: '${baseName}: lane ${lane.name} is behind'
    description: 'Orders reach ${lane.name} on average more than ${laneBacklogMinutes} minutes after the ERP published them: the vendor is slow or failing (retry copies), or the lane was paused and is draining. Waiting: `az servicebus topic subscription show -g ${resourceGroup().name} --namespace-name ${serviceBusName} --topic-name ${deliveriesTopic} -n ${lane.subscription} --query countDetails`.'
    severity: 3
    enabled: true
    scopes: [
      appInsights.id
    ]
    evaluationFrequency: 'PT15M'
    windowSize: 'PT30M'
    autoMitigate: true
    criteria: {
      allOf: [
        {
          query: 'customMetrics | where name == "orders.delivery.latency" and tostring(customDimensions["orders.destination"]) == "${lane.name}" and valueCount > 0 | project timestamp, ageMinutes = valueSum / valueCount / 60000.0'
          timeAggregation: 'Average'
          metricMeasureColumn: 'ageMinutes'
          operator: 'GreaterThan'
          threshold: laneBacklogMinutes
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: {
      actionGroups: hasActionGroup ? [actionGroup.id] : []
    }
  }
}]

// Per lane, from the lane_metrics gauges (laneMetricsEnabled): what waits in its dead-letter queue
// (the broker's dead letters too: expired while paused, MaxDeliveryCountExceeded), how long its
// oldest message has waited, and how long it has been paused. Service Bus reports neither per
// subscription.
resource laneDlqDepthAlerts 'Microsoft.Insights/scheduledQueryRules@2022-06-15' = [for lane in lanes: if (laneMetricsEnabled) {
  name: '${baseName}-lane-dlq-depth-${lane.subscription}'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: '${baseName}: dead-letter queue of lane ${lane.name} not empty'
    description: 'More than ${laneDeadLetterDepth} messages wait in the dead-letter queue of lane ${lane.name} (${deliveriesTopic}/${lane.subscription}). Read them with `python -m order_processor dlq peek --destination ${lane.name}` (one order: `python -m order_processor trace <order id>`), fix the cause, then `dlq replay --destination ${lane.name}`; resolves when the queue is emptied.'
    severity: 2
    enabled: true
    scopes: [
      appInsights.id
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    autoMitigate: true
    criteria: {
      allOf: [
        {
          query: 'customMetrics | where name == "orders.lane.dead_letter_messages" and tostring(customDimensions["orders.lane"]) == "${lane.name}" | project timestamp, depth = value'
          timeAggregation: 'Maximum'
          metricMeasureColumn: 'depth'
          operator: 'GreaterThan'
          threshold: laneDeadLetterDepth
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: {
      actionGroups: hasActionGroup ? [actionGroup.id] : []
    }
  }
}]

resource laneAgeAlerts 'Microsoft.Insights/scheduledQueryRules@2022-06-15' = [for lane in lanes: if (laneMetricsEnabled) {
  name: '${baseName}-lane-age-${lane.subscription}'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: '${baseName}: lane ${lane.name} has messages waiting too long'
    description: 'The oldest message in lane ${lane.name} (${deliveriesTopic}/${lane.subscription}) has waited more than ${laneOldestMessageMinutes} minutes for 15 minutes: the lane is paused, its function is not running, or it cannot keep up. `python -m order_processor lanes` shows every lane.'
    severity: 3
    enabled: true
    scopes: [
      appInsights.id
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    autoMitigate: true
    criteria: {
      allOf: [
        {
          query: 'customMetrics | where name == "orders.lane.oldest_message_age" and tostring(customDimensions["orders.lane"]) == "${lane.name}" | project timestamp, ageMinutes = value / 60.0'
          timeAggregation: 'Minimum'
          metricMeasureColumn: 'ageMinutes'
          operator: 'GreaterThan'
          threshold: laneOldestMessageMinutes
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: {
      actionGroups: hasActionGroup ? [actionGroup.id] : []
    }
  }
}]

resource lanePausedAlerts 'Microsoft.Insights/scheduledQueryRules@2022-06-15' = [for lane in lanes: if (laneMetricsEnabled) {
  name: '${baseName}-lane-paused-${lane.subscription}'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: '${baseName}: lane ${lane.name} paused for ${lanePausedHours} hours'
    description: 'The function ${lane.function} has been disabled (AzureWebJobs.${lane.function}.Disabled) for ${lanePausedHours} hours: its messages wait in ${deliveriesTopic}/${lane.subscription} (time to live ${laneMessageTimeToLiveDays} days, then they expire into its dead-letter queue). Resume it, or turn the destination off for good (<NAME>_ENABLED=false).'
    severity: 3
    enabled: true
    scopes: [
      appInsights.id
    ]
    evaluationFrequency: 'PT15M'
    windowSize: 'PT${lanePausedHours}H'
    autoMitigate: true
    criteria: {
      allOf: [
        {
          query: 'customMetrics | where name == "orders.lane.paused" and tostring(customDimensions["orders.lane"]) == "${lane.name}" | project timestamp, paused = value'
          timeAggregation: 'Minimum'
          metricMeasureColumn: 'paused'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: {
      actionGroups: hasActionGroup ? [actionGroup.id] : []
    }
  }
}]

// ---------------------------------------------------------------------------------------------
// Outputs
// ---------------------------------------------------------------------------------------------

output functionAppName string = functionApp.name
output functionAppPrincipalId string = functionApp.identity.principalId
output serviceBusNamespace string = serviceBus.name
output serviceBusFullyQualifiedNamespace string = connectionSettings.ServiceBusConnection__fullyQualifiedNamespace
output storageAccountName string = storage.name
output keyVaultName string = keyVault.name
output keyVaultUri string = keyVaultUri
output appInsightsName string = appInsights.name
