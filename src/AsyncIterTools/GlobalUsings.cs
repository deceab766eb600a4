global using AsyncTools.Polyfills;
