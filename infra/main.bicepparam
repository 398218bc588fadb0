// Example values for one environment. Copy per environment (e.g. prod.bicepparam) and edit.
// Secrets are not parameters: set them in Key Vault after the deployment (docs/deploy.md).
using './main.bicep'

param baseName = 'ordersync'
param hostingPlan = 'FC1'
param serviceBusSku = 'Standard'
param ordersSessionsEnabled = false
param ordersBatchEnabled = false
param logLevel = 'INFO'

param loyaltyApiBaseUrl = 'https://loyalty.example.com/api'
param loyaltyAuth = 'header'

// The destinations' app settings (README "Settings"): what each enabled destination requires
// (`required` in infra/lanes.json) and any default to change. Defaults and Key Vault references
// come from infra/lanes.json; switch a destination off with e.g. ESPUTNIK_ENABLED: 'false'.
param destinationSettings = {
  PROFILE_STORE_BASE_URL: 'https://track-emea01.profilestore.episerver.net'
  PROFILE_STORE_SCOPE: 'yourwebsitescope'
  PRODUCT_RECS_URL: 'https://uat.peerius.com/tracker/smart-api/orders/offline'
  PRODUCT_RECS_SITE: 'your-site-name'
  RICHRELEVANCE_BASE_URL: 'https://qa-gateway.richrelevance.com'
  RICHRELEVANCE_CLIENT_ID: 'your-richrelevance-client-id'
}

param alertEmail = 'platform-team@example.com'
param operatorPrincipalId = ''
