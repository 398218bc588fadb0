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

param profileStoreEnabled = true
param profileStoreBaseUrl = 'https://track-emea01.profilestore.episerver.net'
param profileStoreScope = 'yourwebsitescope'

param productRecsEnabled = true
param productRecsUrl = 'https://uat.peerius.com/tracker/smart-api/orders/offline'
param productRecsSite = 'your-site-name'

param richRelevanceEnabled = true
param richRelevanceBaseUrl = 'https://qa-gateway.richrelevance.com'
param richRelevanceClientId = 'your-richrelevance-client-id'

param esputnikEnabled = true

param alertEmail = 'platform-team@example.com'
param operatorPrincipalId = ''
